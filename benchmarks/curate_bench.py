"""Curate throughput on generated rows: dedup + decontamination (the target: 100k rows in
under 60 s on two cores), and the whole clean_row path (secrets, syntax, tokens) on the
same rows.

    python -m benchmarks.curate_bench                 # 100k rows
    python -m benchmarks.curate_bench --rows 20000    # quicker

Writes its record to benchmarks/results/curate_bench.json (--json PATH: elsewhere).
Rows are alpaca-style QA and code answers built from a seeded vocabulary, with 5% exact
copies, 5% near copies (one word changed) and 1% copies of a built-in eval probe planted,
so every step has work to do. Prints the figures; nothing is asserted. Under a minute on two
cores with the arguments render.py lists.
"""

from __future__ import annotations

import json
import platform
import random
import time
from pathlib import Path

from benchmarks import harness, record
from stages.data.cleaning import Decontaminator, Deduplicator, text_of

REPO = Path(__file__).resolve().parent.parent
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "ve", "zo")
         for b in ("", "n", "r", "st", "l", "m", "x", "th", "ng", "d")] * 3


def generate(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    probes = [json.loads(line) for line in
              (REPO / "data/sources/probes/code.jsonl").read_text().splitlines()]
    rows: list[dict] = []
    for _ in range(n):
        roll = rng.random()
        if rows and roll < 0.05:
            rows.append(json.loads(json.dumps(rng.choice(rows))))
            continue
        if rows and roll < 0.10:
            row = json.loads(json.dumps(rng.choice(rows)))
            words = row["messages"][1]["content"].split()
            words[rng.randrange(len(words))] = rng.choice(VOCAB)
            row["messages"][1]["content"] = " ".join(words)
            rows.append(row)
            continue
        if roll < 0.11:
            p = rng.choice(probes)
            question, answer = p["prompt"], f"```python\n{p['solution']}\n```"
        elif roll < 0.5:
            name = "_".join(rng.choices(VOCAB, k=2))
            question = f"Write a Python function {name} that " + " ".join(rng.choices(VOCAB, k=12))
            answer = (f"```python\ndef {name}(x):\n    y = x * {rng.randint(2, 99)}\n"
                      f"    return y + {rng.randint(0, 9)}\n```")
        else:
            question = " ".join(rng.choices(VOCAB, k=rng.randint(8, 20))) + "?"
            answer = " ".join(rng.choices(VOCAB, k=rng.randint(20, 60))) + "."
        rows.append({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}],
                     "lang": "en", "source": "bench"})
    return rows


def clean_params() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())["data"]["clean"]


def dedup_and_decontaminate(rows: list[dict]) -> tuple[float, dict]:
    """The settings of params.yaml (data.clean), as curate uses them."""
    clean = clean_params()
    index = Decontaminator(**clean["decontaminate"])
    for line in (REPO / "data/sources/probes/code.jsonl").read_text().splitlines():
        t = json.loads(line)
        index.add(t["task_id"], f"{t['prompt']}\n{t['solution']}")
    dedup = Deduplicator(**clean["dedup"])
    counts = {"kept": 0, "decontaminated": 0, "duplicate": 0}
    start = time.perf_counter()
    for row in rows:
        text = text_of(row)
        if index.hit(text):
            counts["decontaminated"] += 1
        elif dedup.is_duplicate(text):
            counts["duplicate"] += 1
        else:
            counts["kept"] += 1
    return time.perf_counter() - start, counts


def full_clean(rows: list[dict]) -> float:
    """Every step of Curator.clean_row, with the tiny base tokenizer when it exists."""
    import yaml

    from stages.config import CurateStage, validate
    from stages.curate import Curator, eval_index
    from stages.data.formats import SourceSpec
    from stages.models.modeling import load_tokenizer

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"] = {**params["paths"], "sources": str(REPO / "data/sources")}
    cfg = validate(CurateStage, {k: params[k] for k in CurateStage.model_fields})
    tokenizer = load_tokenizer(REPO / "models" / "base")
    curator = Curator(cfg, tokenizer, eval_index(cfg))
    curator.dedup = Deduplicator(**clean_params()["dedup"])
    curator.prefix = ""
    start = time.perf_counter()
    for i, row in enumerate(rows):
        spec = SourceSpec("bench", format="messages")
        curator.clean_row(spec, f"bench:{i}", {"messages": row["messages"][1:]})
    return time.perf_counter() - start


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--full-rows", type=int, default=10_000,
                        help="rows for the whole clean_row path (secrets scanning is the slow part)")
    args = parser.parse_args()
    rows = generate(args.rows, seed=0)
    seconds, counts = dedup_and_decontaminate(rows)
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"dedup + decontamination: {args.rows} rows in {seconds:.1f} s = "
          f"{args.rows / seconds:,.0f} rows/s  {counts}")
    dedup = f"dedup (exact + MinHash LSH) + 10-gram decontamination, {args.rows:,} rows"
    figures = [record.figure(dedup, round(seconds, 1), "s"),
               record.figure(dedup, round(args.rows / seconds), "rows/s")]
    outcome = ", ".join(f"{what} {n:,}" for what, n in counts.items())
    notes = (f"Outcome of the dedup + decontamination pass: {outcome}. Target (issue 3): "
             "100k rows through dedup + decontamination in under 60 s on two cores.")
    if (REPO / "models" / "base" / "tokenizer.json").exists():
        n = min(args.full_rows, len(rows))
        full = full_clean(rows[:n])
        print(f"whole clean_row (secrets, syntax, decontamination, tokens, dedup): {n} rows in "
              f"{full:.1f} s = {n / full:,.0f} rows/s")
        whole = (f"whole clean_row (validation, detect-secrets, syntax, decontamination, "
                 f"token count, dedup), {n:,} rows")
        figures += [record.figure(whole, round(full, 1), "s"),
                    record.figure(whole, round(n / full), "rows/s")]
    else:
        print("whole clean_row: skipped, models/base missing (run `dvc repro base` first)")
        notes += " Whole clean_row path not measured: models/base was missing."
    record.write("curate_bench", "Curate throughput", figures, notes, args.json)


if __name__ == "__main__":
    main()
