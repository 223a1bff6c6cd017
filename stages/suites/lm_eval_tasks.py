"""lm-evaluation-harness tasks as eval suites, scored offline from local files.

Suites  mmlu, cmmlu, ceval-valid, gsm8k, arc_challenge, hellaswag, winogrande (NAMES)
Reads   benchmarks.<key> (a directory in the publisher's layout: the suite's Layout in the
        registry, stages/config/suites.py; ceval-valid reads benchmarks.ceval),
        eval.lm_eval.<suite>, eval.limit, eval.batch_size, seed, system_prompt
Gives   one row per scored document: {"id": doc id ("<subject>/<doc id>" in a group),
        "passed": acc == 1 (gsm8k: exact_match of the strict-match filter), ...}

How: the local rows are rewritten, in the schema of the hub dataset the harness's task reads,
to JSONL files in a temporary directory, beside one task YAML per (sub)task that `include`s
the harness's own YAML (prompt, choices, target, metrics, filters, few-shot sampler, stop
strings) and overrides only where the data comes from, the few-shot count and the decoding
knobs; groups (mmlu, cmmlu, ceval-valid) get a group YAML over their subjects, weighted by
size as the harness's own group is. `lm_eval.simple_evaluate` then scores the model eval
loaded (base + adapter, not merged) through an `HFLM` wrapper, with `log_samples`, and every
logged document becomes one row. The same directory, passed to the lm_eval CLI as
`--include_path`, runs exactly the same tasks (benchmarks/lm_eval_vs_cli.py checks that).

Chat template, per task (eval.lm_eval.<suite>.chat_template): false (the harness's default,
and how the numbers on public leaderboards for these tasks are made) feeds the plain
few-shot text; true renders each prompt through the tokenizer's chat template with the
shared system prompt, the few-shot examples as earlier turns (lm_eval's
apply_chat_template + fewshot_as_multiturn + system_instruction). Multiple-choice tasks
score the log-likelihood of each choice after the prompt either way; gsm8k generates.

Decoding (gsm8k): greedy as the harness's YAML says, and the knobs a checkpoint's
generation_config.json could otherwise switch on under greedy (beams, repetition penalty,
n-gram blocking) are written into the task YAML, so they are never inherited.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import tempfile
from pathlib import Path

import yaml

from stages.config.eval import HARNESS_SETTINGS
from stages.config.suites import LM_EVAL, SUITES, Layout, names
from stages.core.io import DataError, MissingInput, read_jsonl_lines, write_jsonl

NAMES = names(LM_EVAL)
JUDGED = "acc"  # gsm8k rows count toward exact_match (their "metric" field says so)
PREFIX = "stages_"  # our task names, so they never shadow the harness's own
LETTERS = ("A", "B", "C", "D")
# Under greedy decoding these would still change a reply if a checkpoint's
# generation_config.json set them (Qwen2.5-Instruct ships repetition_penalty 1.05-1.1).
GREEDY_KNOBS = {"num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


# The tasks and their layouts: the registry's entries for this module.
LAYOUTS: dict[str, Layout] = {s.name: s.layout for s in SUITES if s.module == LM_EVAL}
BENCHMARK_KEY = {s.name: s.benchmark for s in SUITES if s.module == LM_EVAL}


def probes(cfg, name: str) -> list[dict]:
    """The documents the harness will score, in its order: the first `limit` of each
    (sub)task. Each probe: {"id", "suite", "task"}."""
    out = []
    for subject, splits in source_files(cfg, name).items():
        rows = read_split(name, splits[LAYOUTS[name].eval_split])
        limit = task_limit(cfg, name)
        for doc_id in range(min(len(rows), limit) if limit else len(rows)):
            out.append({"id": probe_id(subject, doc_id), "suite": name,
                        "task": task_name(name, subject)})
    return out


def score(cfg, model, tokenizer, probes: list[dict]) -> list[dict]:
    """Run the harness on `model` (a loaded base or PeftModel) and return one row per probe:
    {"id", "passed", "metric", "task", "target", "reply", "detail", "acc_norm"?}."""
    name = suite_of(probes)
    if type(model).__name__ == "VllmBackend":
        raise DataError(f"{name} scores with transformers (log-likelihoods through lm_eval's "
                         "HFLM); load the variant with transformers for this suite, as for "
                         "perplexity, also under eval.backend=vllm")
    with tempfile.TemporaryDirectory(prefix="stages-lm-eval-") as tmp:
        task = write_tasks(cfg, name, Path(tmp))
        samples = run_harness(cfg, name, model, tokenizer, Path(tmp), task)
    rows = sample_rows(name, samples)
    got, want = [r["id"] for r in rows], [p["id"] for p in probes]
    if sorted(got) != sorted(want):
        raise RuntimeError(f"{name}: the harness scored {len(got)} documents, not the "
                           f"{len(want)} probes; first differences: "
                           f"{sorted(set(got) ^ set(want))[:5]}")
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in want]


def aggregate(cfg, rows: list[dict]) -> dict:
    """The judged share over every scored document (a group's mean weighted by size, as the
    harness aggregates mmlu), acc_norm where the task has it, and the provenance: the md5 of
    the data files read and the lm-eval version."""
    import lm_eval

    name = suite_of(rows)
    lay = LAYOUTS[name]
    out = {lay.metric: round(sum(r["passed"] for r in rows) / len(rows), 4)}
    if "acc_norm" in lay.aggregate:
        out["acc_norm"] = round(sum(r["acc_norm"] for r in rows) / len(rows), 4)
    from lm_eval.tasks._yaml_loader import load_yaml

    first = next(iter(source_files(cfg, name).items()))
    builtin = group_subjects(name)[first[0]] if lay.subject_glob else tasks_root() / lay.builtin
    out.update(documents=len(rows), num_fewshot=fewshot_count(cfg, name),
               fewshot_split=fewshot_split(name, load_yaml(builtin, resolve_func=False),
                                           first[1]),
               dataset_md5=data_md5(cfg, name), lm_eval_version=lm_eval.__version__)
    return out


def suite_of(rows: list[dict]) -> str:
    names = {r["suite"] for r in rows}
    if len(names) != 1:
        raise DataError(f"rows of {sorted(names) or 'no'} suites; score one suite at a time")
    return names.pop()


# ---- the local files and their hub schema


def benchmark_dir(cfg, name: str) -> Path:
    key = BENCHMARK_KEY[name]
    path = getattr(cfg.benchmarks, key)
    if path is None:
        raise DataError(f"suite {name} needs its data: set -S benchmarks.{key}=DIR (the "
                         f"layout is in stages/config/suites.py SUITES, e.g. "
                         f"../shared/datasets/benchmarks/{key})")
    path = Path(path)
    if not path.is_dir():
        raise MissingInput(f"benchmarks.{key}: {path} is not a directory")
    return path


def source_files(cfg, name: str) -> dict[str | None, dict[str, Path]]:
    """{subject (None for a single task): {split: file}} for every file present; the eval
    split is required, the others optional."""
    lay, root = LAYOUTS[name], benchmark_dir(cfg, name)
    subjects = list(group_subjects(name)) if lay.subject_glob else [None]
    out = {}
    for s in subjects:
        files = {split: root / pattern.format(s=s) for split, pattern in lay.files.items()}
        present = {split: p for split, p in files.items() if p.is_file()}
        if lay.eval_split in present:
            out[s] = present
        elif not lay.subject_glob:
            raise MissingInput(f"{name}: {files[lay.eval_split]} not found "
                                    f"(benchmarks.{BENCHMARK_KEY[name]})")
    if not out:
        raise MissingInput(f"{name}: no {lay.files[lay.eval_split]} file for any of the "
                                f"harness's {len(subjects)} subjects under {root}")
    if lay.subject_glob:
        known = {root / lay.files[lay.eval_split].format(s=s) for s in subjects}
        folder = (root / lay.files[lay.eval_split]).parent
        strays = sorted(p.name for p in folder.glob("*.csv") if p not in known)
        if strays:
            raise DataError(f"{name}: {folder} has files for subjects the harness does not "
                            f"know: {strays[:5]}; remove or rename them")
    return out


@functools.cache
def group_subjects(name: str) -> dict[str, Path]:
    """{dataset_name: harness subject YAML} of a group, sorted by subject."""
    from lm_eval.tasks._yaml_loader import load_yaml

    lay = LAYOUTS[name]
    out = {}
    for path in sorted((tasks_root() / lay.builtin).glob(lay.subject_glob)):
        out[load_yaml(path, resolve_func=False, recursive=False)["dataset_name"]] = path
    return dict(sorted(out.items()))


def tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def read_split(name: str, path: Path) -> list[dict]:
    """A local file's rows in the harness's hub schema; a bad row stops with file:row."""
    conv = CONVERTERS[LAYOUTS[name].convert]
    if path.suffix == ".csv":
        raw = read_csv(path, LAYOUTS[name].csv_header)
    else:
        raw = read_jsonl_lines(path)
    rows = []
    for where, row in raw:
        try:
            rows.append(conv(row))
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise DataError(f"{path}:{where}: not a {name} row ({type(err).__name__}: {err}); "
                            f"see its Layout in stages/config/suites.py") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_csv(path: Path, header: bool) -> list[tuple[int, object]]:
    # The csv module keeps every cell a string ("1" stays "1", "None" stays "None"), where
    # a pandas-based loader would turn numeric choices into floats and "None" into NaN.
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        lines = list(reader)
    if header:
        names, lines = lines[0], lines[1:]
        return [(i + 2, dict(zip(names, cells, strict=True))) for i, cells in enumerate(lines)]
    return [(i + 1, cells) for i, cells in enumerate(lines)]


def _letter(value: str) -> str:
    if value not in LETTERS:
        raise ValueError(f"answer {value!r} is not one of {LETTERS}")
    return value


def _gsm8k(row: dict) -> dict:
    return {"question": str(row["question"]), "answer": str(row["answer"])}


def _arc(row: dict) -> dict:
    # AI2's file nests the stem and choices under "question"; the hub puts them side by side.
    choices = row["question"]["choices"]
    labels = [str(c["label"]) for c in choices]
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} is not a choice label {labels}")
    return {"id": row["id"], "question": row["question"]["stem"],
            "choices": {"text": [c["text"] for c in choices], "label": labels},
            "answerKey": row["answerKey"]}


def _hellaswag(row: dict) -> dict:
    return {k: row[k] for k in ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings",
                                "source_id", "split", "split_type")} | {"label": str(row["label"])}


def _winogrande(row: dict) -> dict:
    if str(row["answer"]) not in ("1", "2"):
        raise ValueError(f"answer {row['answer']!r} is not 1 or 2")
    return {k: str(row[k]) for k in ("sentence", "option1", "option2", "answer")}


def _mmlu(cells: list[str]) -> dict:
    if len(cells) != 6:
        raise ValueError(f"{len(cells)} columns, not 6 (question, A, B, C, D, answer)")
    return {"question": cells[0], "choices": cells[1:5],
            "answer": LETTERS.index(_letter(cells[5]))}


def _cmmlu(row: dict) -> dict:
    return {k: row[k] for k in ("Question", "A", "B", "C", "D")} | {"Answer": _letter(row["Answer"])}


def _ceval(row: dict) -> dict:
    # Every split of one dataset needs the same columns: val has no explanation, dev has.
    return {"id": row["id"], **{k: row[k] for k in ("question", "A", "B", "C", "D")},
            "answer": _letter(row["answer"]), "explanation": row.get("explanation", "")}


CONVERTERS = {"gsm8k": _gsm8k, "arc": _arc, "hellaswag": _hellaswag, "winogrande": _winogrande,
              "mmlu": _mmlu, "cmmlu": _cmmlu, "ceval": _ceval}


def data_md5(cfg, name: str) -> str:
    """md5 of every file read, concatenated in path order (with only the eval split present,
    this is `cat <files> | md5sum`, the figure benchmarks/SOURCES.md gives)."""
    h = hashlib.md5()
    for path in sorted(p for splits in source_files(cfg, name).values() for p in splits.values()):
        h.update(path.read_bytes())
    return h.hexdigest()


# ---- task YAMLs


def task_name(name: str, subject: str | None) -> str:
    if subject is None:
        return PREFIX + name
    return PREFIX + group_subjects(name)[subject].stem


def probe_id(subject: str | None, doc_id: int) -> str:
    return str(doc_id) if subject is None else f"{subject}/{doc_id}"


def settings(cfg, name: str):
    return cfg.eval.lm_eval.get(name, HARNESS_SETTINGS)


def task_limit(cfg, name: str) -> int | None:
    return settings(cfg, name).limit or cfg.eval.limit


def fewshot_count(cfg, name: str) -> int:
    """The configured few-shot count, else the harness YAML's (0 where it sets none)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    n = settings(cfg, name).num_fewshot
    if n is not None:
        return n
    lay = LAYOUTS[name]
    path = tasks_root() / lay.builtin
    if lay.subject_glob:
        path = next(iter(group_subjects(name).values()))
    return load_yaml(path, resolve_func=False).get("num_fewshot", 0)


def fewshot_split(name: str, base: dict, data: dict) -> str:
    """The split few-shot examples come from: the harness's, where its file is present;
    else the scored split itself, from which the harness leaves out the document scored."""
    fewshot = LAYOUTS[name].fewshot_split or base.get("training_split")
    return fewshot if fewshot in data else LAYOUTS[name].eval_split


def write_tasks(cfg, name: str, out: Path) -> str:
    """Write the data and task YAMLs of `name` into `out`; return the task (or group) name
    to pass to the harness."""
    from lm_eval.tasks._yaml_loader import load_yaml

    lay, opts = LAYOUTS[name], settings(cfg, name)
    names = []
    for subject, splits in source_files(cfg, name).items():
        builtin = (group_subjects(name)[subject] if subject is not None
                   else tasks_root() / lay.builtin)
        base = load_yaml(builtin, resolve_func=False)
        tname = task_name(name, subject)
        data = {}
        for split, path in splits.items():
            target = out / f"{tname}.{split}.jsonl"
            write_jsonl(target, read_split(name, path))
            data[split] = str(target)
        over = {"task": tname, "tag": [], "dataset_path": "json", "dataset_name": None,
                "dataset_kwargs": {"data_files": data}}
        for key in ("training_split", "validation_split", "test_split"):
            if base.get(key) is not None and base[key] not in data:
                over[key] = None
        over["fewshot_split"] = fewshot_split(name, base, data)
        if opts.num_fewshot is not None:
            over["num_fewshot"] = opts.num_fewshot
        if base.get("output_type") == "generate_until":
            gen = {**base.get("generation_kwargs", {}), **GREEDY_KNOBS}
            if opts.max_gen_toks is not None:
                gen["max_gen_toks"] = opts.max_gen_toks
            over["generation_kwargs"] = gen
        text = yaml.safe_dump({"include": str(builtin), **over}, allow_unicode=True,
                              sort_keys=False)
        (out / f"{tname}.yaml").write_text(text, encoding="utf-8")
        names.append(tname)
    if not lay.subject_glob:
        return names[0]
    group = {"group": PREFIX + name, "task": names,
             "aggregate_metric_list": [{"metric": m, "weight_by_size": True}
                                       for m in lay.aggregate],
             "metadata": {"version": 1}}
    (out / f"{PREFIX}{name}.yaml").write_text(yaml.safe_dump(group, sort_keys=False),
                                              encoding="utf-8")
    return PREFIX + name


# ---- running the harness and reading its samples


def harness_options(cfg, name: str) -> dict:
    """What simple_evaluate is given besides the model and tasks; the CLI flags of
    benchmarks/lm_eval_vs_cli.py are these same values."""
    opts = settings(cfg, name)
    seed = cfg.seed
    return {"limit": task_limit(cfg, name), "apply_chat_template": opts.chat_template,
            "fewshot_as_multiturn": opts.chat_template,
            "system_instruction": cfg.system_prompt if opts.chat_template else None,
            "random_seed": seed, "numpy_random_seed": seed, "torch_random_seed": seed,
            "fewshot_random_seed": seed}


def run_harness(cfg, name: str, model, tokenizer, include: Path, task: str) -> dict:
    """{task name: logged samples} from one simple_evaluate over the tasks in `include`."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.eval.batch_size)
    manager = TaskManager(include_path=str(include), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, log_samples=True,
                              verbosity="WARNING", **harness_options(cfg, name))
    if results is None:
        raise RuntimeError(f"{name}: lm_eval returned no results")
    return results["samples"]


def sample_rows(name: str, samples: dict[str, list[dict]]) -> list[dict]:
    """One row per document from the harness's logged samples ({task: [sample]}, one sample
    per document and filter)."""
    lay = LAYOUTS[name]
    subjects = ({task_name(name, s): s for s in group_subjects(name)} if lay.subject_glob
                else {PREFIX + name: None})
    rows = []
    for task, logged in samples.items():
        if task not in subjects:
            raise RuntimeError(f"{name}: the harness logged samples of an unexpected task {task}")
        for s in logged:
            if s["filter"] != lay.filter:
                continue
            value = s[lay.metric]
            row = {"id": probe_id(subjects[task], s["doc_id"]), "suite": name,
                   "passed": bool(value == 1), "metric": lay.metric, "task": task,
                   "target": str(s["target"]), "doc_hash": s["doc_hash"]}
            if "acc_norm" in s:
                row["acc_norm"] = bool(s["acc_norm"] == 1)
            resps = s["filtered_resps"]
            if lay.metric == "acc":  # log-likelihoods of the choices
                lls = [float(r[0]) for r in resps]
                best = max(range(len(lls)), key=lls.__getitem__)
                row.update(reply=str(best), loglikelihoods=[round(x, 4) for x in lls],
                           detail=f"choice {best} of {len(lls)}, "
                           f"target {row['target']}")
            else:  # the generated text, and what the filter extracted from it
                row.update(reply=str(s["resps"][0][0]), extracted=str(resps[0]),
                           detail=f"extracted {resps[0]!r}, target "
                           f"{row['target'].split('####')[-1].strip()!r}")
            rows.append(row)
    return rows

