"""Our lm-eval suites against lm_eval's own CLI on the same model, adapter, task YAMLs,
few-shot, limit and seed: per-document outcomes side by side, and wall time per 1,000
documents of each.

    python -m benchmarks.lm_eval_vs_cli --variant sft --limit 50 \\
        --data ../shared/datasets/benchmarks

For each task, stages.suites.lm_eval_tasks writes the local data and task YAMLs into a
temporary directory; ours then scores them in this process (the variant loaded as eval loads
it: base + adapter, not merged, wrapped in HFLM), and `python -m lm_eval run --model hf
--model_args pretrained=<base>,peft=<adapter> --include_path <that directory> --log_samples`
scores them in a child process. The outcome compared is the judged one (acc; gsm8k:
exact_match of strict-match) per document id; the doc hashes (the harness's hash of the
document) must match too. Our time counts loading the variant, writing the YAMLs and
scoring; the CLI's counts its whole process (start, imports, task index, model load,
scoring, writing its files). Both at eval.batch_size and --threads torch threads. Needs models/base and the variant's
adapter (`dvc checkout` or `dvc repro sft`). Writes benchmarks/results/lm_eval_vs_cli.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness, record

TASKS = ("gsm8k", "arc_challenge", "mmlu", "cmmlu", "ceval-valid")
DATA_DIRS = {"ceval-valid": "ceval"}
GROUPS = ("mmlu", "cmmlu", "ceval-valid")


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--variant", default="sft", choices=("base", "sft", "dpo"))
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--group-limit", type=int,
                        help="--limit for mmlu, cmmlu and ceval-valid, which lm_eval counts "
                             "per subject (57, 67, 52 of them); default: --limit")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--data", type=Path, default=record.REPO.parent / "shared" / "datasets"
                        / "benchmarks")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads on both sides (1: a tiny model on a shared "
                             "machine is stalled by every other process at more threads)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the CLI child's torch threads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    figures, lines = [], []
    for name in args.tasks.split(","):
        cfg = config(name, args)
        with tempfile.TemporaryDirectory(prefix="lm-eval-vs-cli-") as tmp:
            ours, ours_s = run_ours(cfg, name, args.variant)
            cli, cli_s = run_cli(cfg, name, args.variant, Path(tmp))
        n, agree, same_doc, same_reply = compare(name, ours, cli)
        per_ours, per_cli = 1000 * ours_s / n, 1000 * cli_s / n
        line = (f"{name:>13}: n={n} agree={agree}/{n} same_docs={same_doc}/{n} "
                f"same_replies={same_reply}/{n} "
                f"ours={ours_s:.1f}s cli={cli_s:.1f}s per_1000: ours={per_ours:.1f}s "
                f"cli={per_cli:.1f}s ratio ours/cli={per_ours / per_cli:.2f}")
        print(line, flush=True)
        lines.append(line)
        figures += [record.figure(f"{name}: documents", n),
                    record.figure(f"{name}: same outcome as the CLI", agree),
                    record.figure(f"{name}: same reply as the CLI (choice or generated text)",
                                  same_reply),
                    record.figure(f"{name}: ours, s per 1,000 documents", round(per_ours, 1), "s"),
                    record.figure(f"{name}: lm_eval CLI, s per 1,000 documents",
                                  round(per_cli, 1), "s"),
                    record.figure(f"{name}: wall time ratio ours / CLI",
                                  round(per_ours / per_cli, 3))]
    record.write("lm_eval_vs_cli", "lm-eval suites against the lm_eval CLI", figures,
                 f"variant {args.variant}, limit {args.limit} per task, "
                 f"{args.group_limit or args.limit} per subject of mmlu, cmmlu and ceval-valid; lm_eval "
                 f"{lm_eval_version()}.\n" + "\n".join(lines), args.json)


def config(name: str, args):
    from stages.config import EvalStage, read_params, stage_params, validate

    # The shared copies stay outside the repo (eval's load() would refuse them there: they
    # are no DVC dependency); a benchmark reads them without running a stage.
    params = read_params()
    key = DATA_DIRS.get(name, name)
    params["benchmarks"] = {**params["benchmarks"], key: str(args.data / key)}
    limit = args.group_limit if name in GROUPS and args.group_limit else args.limit
    params["eval"] = {**params["eval"], "limit": limit}
    return validate(EvalStage, stage_params(EvalStage, params))


def run_ours(cfg, name: str, variant: str) -> tuple[list[dict], float]:
    from stages.models.modeling import load_tokenizer, load_variant
    from stages.suites import lm_eval_tasks

    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    model = load_variant(cfg.paths, variant, cfg.model.dtype)
    rows = lm_eval_tasks.score(cfg, model, tokenizer, lm_eval_tasks.probes(cfg, name))
    return rows, time.perf_counter() - start


def run_cli(cfg, name: str, variant: str, tmp: Path) -> tuple[list[dict], float]:
    """The same tasks through `python -m lm_eval run`; its logged samples as our rows."""
    import torch

    from stages.suites import lm_eval_tasks

    include, out = tmp / "tasks", tmp / "out"
    include.mkdir()
    task = lm_eval_tasks.write_tasks(cfg, name, include)
    opts = lm_eval_tasks.harness_options(cfg, name)
    # Absolute paths: the CLI runs in the temporary directory.
    model_args = f"pretrained={cfg.paths.model_dir('base').resolve()},dtype={cfg.model.dtype}"
    if variant != "base":
        model_args += f",peft={cfg.paths.model_dir(variant).resolve()}"
    seeds = ",".join(str(opts[k]) for k in ("random_seed", "numpy_random_seed",
                                            "torch_random_seed", "fewshot_random_seed"))
    argv = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args", model_args,
            "--device", "cuda" if torch.cuda.is_available() else "cpu", "--tasks", task,
            "--include_path", str(include), "--log_samples", "--output_path", str(out),
            "--seed", seeds, "--batch_size", str(cfg.eval.batch_size)]
    if opts["limit"]:
        argv += ["--limit", str(opts["limit"])]
    if opts["apply_chat_template"]:
        argv += ["--apply_chat_template", "--fewshot_as_multiturn", "true",
                 "--system_instruction", opts["system_instruction"]]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval CLI failed on {name}:\n{done.stderr[-3000:]}")
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        logged = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")
                  if line.strip()]  # not splitlines: U+2028 inside a string is no line break
        samples[path.name[len("samples_"):].rsplit("_", 1)[0]] = logged
    return lm_eval_tasks.sample_rows(name, samples), seconds


def compare(name: str, ours: list[dict], cli: list[dict]) -> tuple[int, int, int, int]:
    """(documents, same outcome, same document hash, same reply: the chosen choice, or the
    whole generated text); a document one side lacks fails."""
    theirs = {r["id"]: r for r in cli}
    if set(theirs) != {r["id"] for r in ours}:
        missing = sorted({r["id"] for r in ours} ^ set(theirs))[:5]
        raise RuntimeError(f"{name}: ours and the CLI scored different documents: {missing}")
    agree = sum(r["passed"] == theirs[r["id"]]["passed"] for r in ours)
    same_doc = sum(r["doc_hash"] == theirs[r["id"]]["doc_hash"] for r in ours)
    same_reply = sum(r["reply"] == theirs[r["id"]]["reply"] for r in ours)
    for r in ours:
        if r["passed"] != theirs[r["id"]]["passed"]:
            print(f"  {name} {r['id']}: ours {r['detail']}; cli {theirs[r['id']]['detail']}")
    return len(ours), agree, same_doc, same_reply


def lm_eval_version() -> str:
    import lm_eval

    return lm_eval.__version__


if __name__ == "__main__":
    main()
