"""judge: score replies from any model on any built-in suite, as the eval stage would.

Reads   params.yaml (identity, model identity, eval settings, benchmarks, paths), the suite's
        probes (data/curated/probes/ after curate, else data/sources/probes/ with the
        identity placeholders filled in) and --replies
Writes  --out (default: stdout): {"suite", "probes": [{"id", "passed" | "score", "detail",
        ...}], <the suite's aggregate metrics>}
Run     python -m stages.judge --suite knowledge --replies replies.jsonl --out scored.json

--replies is JSON Lines, one row per probe: {"id": <probe id>, "reply": <text>} ("reply" may
be a list of samples for code suites scored with eval.samples > 1). The replies can come from
anywhere (vLLM, an API, another harness); code runs in the sandbox as everywhere else. An id
that is no probe of the suite, a probe without a reply, or a reply given twice is an error
naming them. Perplexity scores the model's own loss, not replies, so it cannot be judged here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stages import suites
from stages.config import EvalStage, StageError, load, run_stage
from stages.io import MissingInput, atomic_write_text, read_jsonl_lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--replies", required=True, type=Path)
    parser.add_argument("--out", type=Path, help="output JSON (default: stdout)")
    args = parser.parse_args(argv)

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

    text = json.dumps(result, ensure_ascii=False, indent=2) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}: {len(rows)} probes", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return result


def with_probes(cfg: EvalStage) -> EvalStage:
    """The curated probes when curate has run; else the built-in ones, curated here into a
    temporary folder (identity placeholders filled in from params.yaml), as curate would."""
    if suites.probe_dir(cfg).is_dir():
        return cfg
    import tempfile

    from stages.curate import build_probes
    from stages.io import write_jsonl

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


if __name__ == "__main__":
    run_stage(main)
