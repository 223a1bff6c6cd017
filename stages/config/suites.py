"""The suite registry: every eval suite, the module that runs it and where its data is.

The one list of suites. The config's suite names (`Suite`, `LmEvalSuite`), the benchmark keys
it accepts (`BenchmarksConfig`), `stages.suites.get` and the lm-eval tasks' layouts
(stages/suites/lm_eval_tasks.py) are all read from `SUITES`. It lives beside the schema, not
in stages/suites/, because the schema is built from it and sits on a lower floor; it imports
nothing, so naming a suite loads neither lm_eval nor a suite module.

Adding an lm-evaluation-harness task whose rows one of lm_eval_tasks.CONVERTERS reads is one
`SuiteEntry` here (with its `Layout`) plus `benchmarks.<key>: null` in conf/config.yaml (its
data path; set it with -S benchmarks.<key>=DIR). Its eval.lm_eval settings default to the
harness's own when conf/eval/ gives none.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    """Where an lm-eval task's files are under benchmarks.<key>, and how its rows become the
    hub dataset's rows."""

    builtin: str
    """The harness's task YAML (a group: the folder of its subject YAMLs), under lm_eval/tasks."""
    files: dict[str, str]
    """Split name (as the harness's YAML names it) -> file; `{s}` is the subject."""
    eval_split: str
    fewshot_split: str | None
    convert: str
    """Row converter: a key of stages/suites/lm_eval_tasks.py CONVERTERS."""
    subject_glob: str = ""
    """Groups: the harness's subject YAMLs in `builtin`."""
    csv_header: bool = True
    metric: str = "acc"
    filter: str = "none"
    """Which of the harness's filters the judged metric is read from."""
    aggregate: tuple[str, ...] = field(default=("acc",))


@dataclass(frozen=True)
class SuiteEntry:
    name: str
    """As eval.suites, the eval matrix and metrics/eval/<variant>/<name>.json name it."""
    module: str
    """The module of stages/suites/ that runs it (stages.suites.get imports it)."""
    benchmark: str | None = None
    """The benchmarks.<key> its data is read from; null: its probes are built in."""
    data: str = ""
    """What the file(s) at benchmarks.<key> are, for a key this entry adds to the schema."""
    layout: Layout | None = None
    """lm-eval tasks (module lm_eval_tasks) only."""


LM_EVAL = "lm_eval_tasks"
BIGCODEBENCH = "bigcodebench"

# In this order everywhere: the config's literals, the benchmark keys, the report.
SUITES = (
    SuiteEntry("code", "code"),
    SuiteEntry("identity", "identity"),
    SuiteEntry("knowledge", "knowledge"),
    SuiteEntry("perplexity", "perplexity"),
    SuiteEntry("dimensions", "dimensions", "humanevalpack"),
    SuiteEntry("humaneval+", "evalplus", "humanevalplus"),
    SuiteEntry("mbpp+", "evalplus", "mbppplus"),
    # lm-evaluation-harness tasks: a directory each, in the publisher's layout; null: the
    # suite cannot run.
    SuiteEntry("mmlu", LM_EVAL, "mmlu",
               "test/<subject>_test.csv (and dev/<subject>_dev.csv for few-shot), hendrycks' "
               "CSVs.",
               Layout("mmlu/default", {"test": "test/{s}_test.csv", "dev": "dev/{s}_dev.csv"},
                      "test", "dev", "mmlu", subject_glob="mmlu_*.yaml", csv_header=False)),
    SuiteEntry("cmmlu", LM_EVAL, "cmmlu", "test/<subject>.csv (and dev/<subject>.csv).",
               Layout("cmmlu", {"test": "test/{s}.csv", "dev": "dev/{s}.csv"}, "test", "dev",
                      "cmmlu", subject_glob="cmmlu_*.yaml", aggregate=("acc", "acc_norm"))),
    # benchmarks.ceval: a field name cannot hold "-"
    SuiteEntry("ceval-valid", LM_EVAL, "ceval",
               "The ceval-valid suite: val/<subject>_val.csv (and dev/<subject>_dev.csv).",
               Layout("ceval", {"val": "val/{s}_val.csv", "dev": "dev/{s}_dev.csv"}, "val",
                      "dev", "ceval", subject_glob="ceval-valid_*.yaml",
                      aggregate=("acc", "acc_norm"))),
    SuiteEntry("gsm8k", LM_EVAL, "gsm8k",
               "test.jsonl (and train.jsonl, which the harness draws its 5 examples from; "
               "without it they come from the test split, the scored question left out).",
               Layout("gsm8k/gsm8k.yaml", {"test": "test.jsonl", "train": "train.jsonl"},
                      "test", "train", "gsm8k", metric="exact_match", filter="strict-match",
                      aggregate=("exact_match",))),
    SuiteEntry("arc_challenge", LM_EVAL, "arc_challenge", "ARC-Challenge-Test.jsonl, AI2's file.",
               Layout("arc/arc_challenge.yaml",
                      {"test": "ARC-Challenge-Test.jsonl", "train": "ARC-Challenge-Train.jsonl",
                       "validation": "ARC-Challenge-Dev.jsonl"},
                      "test", None, "arc", aggregate=("acc", "acc_norm"))),
    SuiteEntry("hellaswag", LM_EVAL, "hellaswag", "hellaswag_val.jsonl, rowanz/hellaswag's file.",
               Layout("hellaswag/hellaswag.yaml",
                      {"validation": "hellaswag_val.jsonl", "train": "hellaswag_train.jsonl"},
                      "validation", None, "hellaswag", aggregate=("acc", "acc_norm"))),
    SuiteEntry("winogrande", LM_EVAL, "winogrande", "dev.jsonl of winogrande_1.1.",
               Layout("winogrande/default.yaml",
                      {"validation": "dev.jsonl", "train": "train_xl.jsonl"},
                      "validation", None, "winogrande")),
    SuiteEntry("bigcodebench-complete", BIGCODEBENCH, "bigcodebench",
               "BigCodeBench.jsonl (v0.1.0 or later, the full 1,140 tasks)."),
    SuiteEntry("bigcodebench-instruct", BIGCODEBENCH, "bigcodebench"),
    SuiteEntry("bigcodebench-complete-hard", BIGCODEBENCH, "bigcodebench_hard",
               "The -Hard subset's .jsonl (same fields), for the bigcodebench-*-hard suites."),
    SuiteEntry("bigcodebench-instruct-hard", BIGCODEBENCH, "bigcodebench_hard"),
)


def names(module: str | None = None) -> tuple[str, ...]:
    """Every suite's name, or those `module` runs, in registry order."""
    return tuple(s.name for s in SUITES if module is None or s.module == module)


def entry(name: str) -> SuiteEntry | None:
    return next((s for s in SUITES if s.name == name), None)
