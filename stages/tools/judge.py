"""judge: score replies from any model on any built-in suite, as the eval stage would, or
evalplus-format samples on humaneval+ / mbpp+, as `evalplus.evaluate` would.

Run     python -m stages.tools.judge --suite knowledge --replies replies.jsonl --out scored.json
        python -m stages.tools.judge --suite humaneval+ --samples samples.jsonl \
            --dataset-path ../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl \
            --out result.json

With --replies:
Reads   params.yaml (identity, model identity, eval settings, benchmarks, paths), the suite's
        probes (data/curated/probes/ after curate, else data/sources/probes/ with the
        identity placeholders filled in) and --replies
Writes  --out (default: stdout): {"suite", "probes": [{"id", "passed" | "score", "detail",
        ...}], <the suite's aggregate metrics>}

--replies is JSON Lines, one row per probe: {"id": <probe id>, "reply": <text>} ("reply" may
be a list of samples for code suites scored with eval.samples > 1). The replies can come from
anywhere (vLLM, an API, another harness); code runs in the sandbox as everywhere else. An id
that is no probe of the suite, a probe without a reply, or a reply given twice is an error
naming them. Perplexity scores the model's own loss, not replies, so it cannot be judged here.

With --samples (humaneval+ or mbpp+; no params.yaml): HumanEval+ / MBPP+ pass@1 for samples
from any model, every sample run in our sandbox. --samples is evalplus's sample format: one
line per sample with `task_id` and either `solution` (the whole program) or `completion`
(appended to the task's prompt). Like `evalplus.evaluate`, samples are not sanitized (pass
--sanitize to run evalplus's sanitize first). The data is --dataset-path (a local evalplus
.jsonl), else evalplus's download. --out (default: stdout) holds pass@1 on the base and the
plus tests (plus counts a sample only if it also passes base, as evalplus does), per-task
statuses, why each failing sample failed (syntax_error, runtime_error:<Type>, wrong_answer,
timeout or crashed, at its first failing input), the dataset md5 and the evalplus version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from stages import suites
from stages.config import EvalStage, StageError, load, run_stage
from stages.core.io import DataError, MissingInput, atomic_write_text, read_jsonl_lines
from stages.sandbox.execute import SandboxPool, require_sandbox
from stages.stats.paired import pass_at_k
from stages.suites.evalplus_harness import DATASETS, Benchmark, check, load_benchmark, sandbox_pool

# Options of --samples alone (the replies path takes them from params.yaml).
SAMPLES_ONLY = ("dataset_path", "sanitize", "unsafe_execution")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--suite", required=True)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--replies", type=Path, help="JSON Lines of {id, reply}, one per probe")
    given.add_argument("--samples", type=Path,
                       help="evalplus-format samples (humaneval+ / mbpp+): task_id with "
                            "solution or completion")
    parser.add_argument("--out", type=Path, help="output JSON (default: stdout)")
    parser.add_argument("--dataset-path",
                        help="--samples: local evalplus .jsonl (else evalplus downloads)")
    parser.add_argument("--sanitize", action="store_true",
                        help="--samples: run evalplus's sanitize first")
    parser.add_argument("--unsafe-execution", action="store_true",
                        help="--samples: run without the bubblewrap sandbox where it cannot "
                             "start (with --replies: params.yaml's unsafe_execution)")
    args = parser.parse_args(argv)
    if args.samples is not None:
        return judge_samples(args)
    misplaced = [f"--{o.replace('_', '-')}" for o in SAMPLES_ONLY if getattr(args, o)]
    if misplaced:
        parser.error(f"{', '.join(misplaced)}: only with --samples (with --replies, "
                     "params.yaml's benchmarks.* and unsafe_execution apply)")

    cfg = with_probes(load(EvalStage))
    suite = suites.get(args.suite)
    if hasattr(suite, "score"):
        raise StageError(f"{args.suite} scores the model itself (no replies to judge); run "
                         f"`python -m stages.eval --variant V --suite {args.suite}` instead")
    probes = suite.probes(cfg, args.suite)
    samples = cfg.eval.samples if getattr(suite, "SAMPLED", False) else 1
    replies = read_replies(args.replies, [p["id"] for p in probes], samples)
    rows = suites.judged_rows(cfg, suite, probes, replies)
    result = {"suite": args.suite, "probes": rows, **suites.metrics(cfg, suite, rows)}
    write(args.out, result, f"{len(rows)} probes")
    return result


def judge_samples(args: argparse.Namespace) -> dict:
    """evalplus-format samples scored on humaneval+ / mbpp+ (the module's docstring)."""
    if args.suite not in DATASETS:
        raise StageError(f"--samples scores evalplus-format samples: --suite must be one of "
                         f"{sorted(DATASETS)} (got {args.suite!r}); other suites take --replies")
    sandbox = require_sandbox(args.unsafe_execution)
    bench = load_benchmark(args.suite, args.dataset_path)
    samples = read_samples(args.samples, bench, args.sanitize)
    start = time.perf_counter()
    statuses = score_samples(bench, samples, unsafe=not sandbox)
    result = summarize(bench, samples, statuses, time.perf_counter() - start)
    write(args.out, result, f"pass@1 base {result['pass@1']['base']:.4f}, plus "
          f"{result['pass@1']['plus']:.4f} over {result['samples']} samples of "
          f"{result['tasks_scored']} tasks in {result['seconds']:.1f} s")
    return result


def write(out: Path | None, result: dict, summary: str) -> None:
    """`result` as JSON to `out` (stdout when None); the one-line summary on stderr."""
    text = json.dumps(result, ensure_ascii=False, indent=2) + "\n"
    if out:
        atomic_write_text(out, text)
        print(f"wrote {out}: {summary}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def with_probes(cfg: EvalStage) -> EvalStage:
    """The curated probes when curate has run; else the built-in ones, curated here into a
    temporary folder (identity placeholders filled in from params.yaml), as curate would."""
    if suites.probe_dir(cfg).is_dir():
        return cfg
    import tempfile

    from stages.core.io import write_jsonl
    from stages.curate import build_probes

    folder = Path(tempfile.mkdtemp(prefix="stages-judge-"))
    for name, rows in build_probes(cfg).items():
        write_jsonl(folder / "probes" / name, rows)
    print(f"{suites.probe_dir(cfg)} not found (curate has not run): judging against "
          f"{cfg.paths.sources}/probes/", file=sys.stderr)
    return cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"curated": str(folder)})})


def read_replies(path: Path, ids: list[str], samples: int) -> list[list[str]]:
    """One list of replies per probe id, in probe order."""
    if not path.exists():
        raise MissingInput(f"{path} not found; give --replies a JSON Lines file of "
                                '{"id": ..., "reply": ...} rows')
    known, got, problems = set(ids), {}, []
    for number, row in read_jsonl_lines(path):
        pid, reply = (row.get("id"), row.get("reply")) if isinstance(row, dict) else (None, None)
        reply = [reply] if isinstance(reply, str) else reply
        if not isinstance(pid, str) or not (isinstance(reply, list) and reply
                                            and all(isinstance(r, str) for r in reply)):
            problems.append(f"{path}:{number}: needs a string \"id\" and a string \"reply\"")
        elif pid not in known:
            problems.append(f"{path}:{number}: {pid!r} is no probe of this suite")
        elif pid in got:
            problems.append(f"{path}:{number}: a second reply for {pid!r}")
        elif len(reply) != samples:
            problems.append(f"{path}:{number}: {len(reply)} replies for {pid!r}; this suite "
                            f"takes {samples} per probe (eval.samples)")
        else:
            got[pid] = reply
    missing = [i for i in ids if i not in got]
    if missing:
        problems.append(f"{path}: no reply for {len(missing)} probe(s): "
                        f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    if problems:
        raise StageError("\n".join(problems))
    return [got[i] for i in ids]


def read_samples(path: Path, bench: Benchmark, sanitize: bool) -> list[dict]:
    if not path.exists():
        raise MissingInput(f"samples file {path} does not exist")
    samples = []
    for lineno, row in read_jsonl_lines(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: a sample is a JSON object, got {type(row).__name__}")
        task_id = row.get("task_id")
        if task_id not in bench.problems:
            raise DataError(f"{path}:{lineno}: task_id {task_id!r} is not in {bench.name}")
        if isinstance(row.get("solution"), str):
            code = row["solution"]
        elif isinstance(row.get("completion"), str):
            code = bench.problems[task_id]["prompt"] + row["completion"]
        else:
            raise DataError(f"{path}:{lineno}: needs a string `solution` or `completion`")
        if sanitize:
            from evalplus.sanitize import sanitize as evalplus_sanitize

            code = evalplus_sanitize(code, bench.problems[task_id]["entry_point"])
        samples.append({"task_id": task_id, "code": code})
    if not samples:
        raise DataError(f"{path} has no samples")
    return samples


def score_samples(bench: Benchmark, samples: list[dict], unsafe: bool) -> list[dict]:
    """{"base": status, "plus": status, "failure": kind} per sample, in one warm sandbox per
    core (each split a child forked there)."""
    with sandbox_pool(SandboxPool.per_core(), unsafe) as boxes:
        return boxes.map(lambda s: check(bench, s["task_id"], s["code"], unsafe, boxes), samples,
                         desc=f"scoring {bench.name}", unit="sample", leave=True)


def summarize(bench: Benchmark, samples: list[dict], statuses: list[dict],
              seconds: float) -> dict:
    """pass@1 per task with the unbiased estimator (n samples, c correct), averaged."""
    import evalplus

    per_task: dict[str, list[dict]] = defaultdict(list)
    for sample, status in zip(samples, statuses, strict=True):
        per_task[sample["task_id"]].append({"base_status": status["base"],
                                            "plus_status": status["plus"],
                                            "failure": status["failure"]})
    base, plus = [], []
    for rows in per_task.values():
        n = len(rows)
        base.append(pass_at_k(n, sum(r["base_status"] == "pass" for r in rows), 1))
        plus.append(pass_at_k(n, sum(r["base_status"] == "pass" and r["plus_status"] == "pass"
                                     for r in rows), 1))
    return {
        "dataset": bench.name,
        "dataset_md5": bench.md5,
        "evalplus_version": evalplus.__version__,
        "samples": len(samples),
        "tasks_scored": len(per_task),
        "pass@1": {"base": round(sum(base) / len(base), 4), "plus": round(sum(plus) / len(plus), 4)},
        "seconds": round(seconds, 1),
        "tasks": dict(per_task),
    }


if __name__ == "__main__":
    run_stage(main)
