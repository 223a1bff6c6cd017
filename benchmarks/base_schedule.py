"""The tiny base's pretraining schedule against its capability bars: how many steps the base
stage needs before the pipeline still shows what it is for.

    python -m benchmarks.base_schedule --steps 1000 --steps 500

For each schedule (model.train.steps, warmup scaled with it unless --warmup is given), in a
temporary directory, with params.yaml as committed otherwise: the base stage (timed), the
base's code and knowledge suites; curate + sft with the default data and the sft's identity
suite; curate + sft with data=identity_only and that sft's code and knowledge suites. The
bars (issue 16): code and knowledge at least 0.8 at base, identity learned after sft (the
identity suite's consistency at least 0.8), and forgetting still visible with
data=identity_only (code or knowledge lower than at base by more than the eval budget).
Stage mains run in this process (torch threads: --threads, else torch's default). Writes
benchmarks/results/base_schedule.json (--json PATH: elsewhere). About 6 to 10 minutes per
schedule on two shared cores.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import harness, record

REPO = Path(__file__).resolve().parent.parent
BAR = 0.8


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--steps", type=int, action="append", required=True,
                        help="model.train.steps of a schedule (repeatable)")
    parser.add_argument("--warmup", type=int, help="model.train.warmup_steps (default: steps/10)")
    parser.add_argument("--lr", type=float, help="model.train.lr (default: params.yaml's)")
    harness.threads(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args()
    harness.pin_threads(args.threads)

    rows = [check(steps, args) for steps in args.steps]
    print(f"\n{'steps':>5} {'base s':>7} {'code':>5} {'know':>5} {'identity':>8} "
          f"{'code io':>7} {'know io':>7}  bars")
    for r in rows:
        print(f"{r['steps']:>5} {r['base_s']:>7.1f} {r['code']:>5.2f} {r['knowledge']:>5.2f} "
              f"{r['identity']:>8.2f} {r['code_io']:>7.2f} {r['knowledge_io']:>7.2f}  "
              f"{'met' if r['met'] else 'NOT met: ' + ', '.join(r['failed'])}")
    figures = []
    for r in rows:
        s = f"steps {r['steps']}"
        figures += [record.figure(f"{s}: base stage", round(r["base_s"], 1), "s"),
                    record.figure(f"{s}: base code pass@1", r["code"]),
                    record.figure(f"{s}: base knowledge accuracy", r["knowledge"]),
                    record.figure(f"{s}: sft identity consistency", r["identity"]),
                    record.figure(f"{s}: identity_only sft code pass@1", r["code_io"]),
                    record.figure(f"{s}: identity_only sft knowledge accuracy",
                                  r["knowledge_io"]),
                    record.figure(f"{s}: bars", "met" if r["met"] else
                                  "not met: " + ", ".join(r["failed"]))]
    notes = ("params.yaml as committed but for model.train.steps (warmup "
             f"{'= ' + str(args.warmup) if args.warmup else 'steps / 10'}"
             f"{', lr ' + str(args.lr) if args.lr else ''}); bars: code and knowledge >= 0.8 "
             "at base, sft identity consistency >= 0.8, and with data=identity_only code or "
             "knowledge below base by more than eval.budget. Stage mains in one process.")
    record.write("base_schedule", "The tiny base's pretraining schedule and its capability bars",
                 figures, notes, args.json)


def check(steps: int, args) -> dict:
    from conftest import stage_cfg
    from stages import base, curate, sft
    from stages import eval as eval_stage
    from stages.config import BaseStage, CurateStage, EvalStage, SftStage
    from stages.tools.compose import compose

    root = Path(tempfile.mkdtemp(prefix=f"base-schedule-{steps}-"))
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["train"].update(steps=steps, warmup_steps=args.warmup or steps // 10)
    if args.lr:
        params["model"]["train"]["lr"] = args.lr
    identity_only = yaml.safe_load(compose(["data=identity_only"]))["data"]

    def at(name: str, data: dict | None = None) -> dict:
        p = copy.deepcopy(params)
        p["paths"].update(models=str(root / name / "models"), curated=str(root / name / "curated"),
                          metrics=str(root / name / "metrics"),
                          checkpoints=str(root / name / "checkpoints"))
        if data is not None:
            p["data"] = data
        (root / name / "models").mkdir(parents=True, exist_ok=True)
        return p

    print(f"== steps {steps} in {root}", flush=True)
    mixed, only = at("mixed"), at("identity_only", identity_only)
    start = time.perf_counter()
    base.main(stage_cfg(BaseStage, mixed))
    base_s = time.perf_counter() - start
    (root / "identity_only" / "models" / "base").symlink_to(root / "mixed" / "models" / "base")
    out = {"steps": steps, "base_s": base_s}
    for p in (mixed, only):
        curate.main(stage_cfg(CurateStage, p))
        sft.main(stage_cfg(SftStage, p))
    cfg = stage_cfg(EvalStage, mixed)
    out["code"] = eval_stage.main("base", "code", cfg)["pass@1"]
    out["knowledge"] = eval_stage.main("base", "knowledge", cfg)["accuracy"]
    out["identity"] = eval_stage.main("sft", "identity", cfg)["consistency"]
    cfg = stage_cfg(EvalStage, only)
    out["code_io"] = eval_stage.main("sft", "code", cfg)["pass@1"]
    out["knowledge_io"] = eval_stage.main("sft", "knowledge", cfg)["accuracy"]
    budget = params["eval"]["budget"]
    failed = [name for name, ok in (
        ("code at base", out["code"] >= BAR), ("knowledge at base", out["knowledge"] >= BAR),
        ("identity after sft", out["identity"] >= BAR),
        ("forgetting with identity_only",
         out["code"] - out["code_io"] > budget["code"]
         or out["knowledge"] - out["knowledge_io"] > budget["knowledge"])) if not ok]
    out.update(met=not failed, failed=failed)
    print(f"   {out}", flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    sys.path[:0] = [str(REPO / "tests")]  # conftest's stage_cfg
    main()
