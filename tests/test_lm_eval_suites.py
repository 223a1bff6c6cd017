"""lm-evaluation-harness suites on ten-row files in each task's own format, scored on the
tiny pipeline's models through lm_eval itself."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, SHARED_DATASETS, repo_params, stage_cfg
from stages import suites
from stages.config import Config, ConfigError, EvalStage, validate
from stages.config.suites import names
from stages.core.io import DataError, read_jsonl
from stages.models.modeling import load_tokenizer, load_variant
from stages.suites import lm_eval_tasks as lt

BENCH = SHARED_DATASETS / "benchmarks"
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "river", "stone"]


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def ten_row_files(root: Path) -> dict[str, str]:
    """One directory per suite, each in its publisher's layout, ten scored rows each."""
    w = WORDS
    write_jsonl(root / "gsm8k" / "test.jsonl", [
        {"question": f"Tom has {i} apples and buys 2 more. How many?",
         "answer": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}"} for i in range(10)])
    write_jsonl(root / "gsm8k" / "train.jsonl", [
        {"question": f"Ann has {i} pens and loses 1. How many?", "answer": f"#### {i - 1}"}
        for i in range(2, 7)])
    write_jsonl(root / "arc_challenge" / "ARC-Challenge-Test.jsonl", [
        {"id": f"Q{i}", "question": {"stem": f"Which is {w[i]}?", "choices": [
            {"text": w[(i + k) % 10], "label": lab} for k, lab in enumerate("ABCD")]},
         "answerKey": "ABCD"[i % 4]} for i in range(9)] + [
        {"id": "Q9", "question": {"stem": "Which number?", "choices": [
            {"text": t, "label": lab} for t, lab in zip(["1", "2", "3"], "123", strict=True)]},
         "answerKey": "2"}])
    write_jsonl(root / "hellaswag" / "hellaswag_val.jsonl", [
        {"ind": i, "activity_label": "Walking", "ctx_a": f"A {w[i]} dog walks.",
         "ctx_b": "it", "ctx": f"A {w[i]} dog walks. it", "endings": [
             f"runs to the {w[(i + k) % 10]}." for k in range(4)], "source_id": f"s{i}",
         "split": "val", "split_type": "indomain", "label": i % 4} for i in range(10)])
    write_jsonl(root / "winogrande" / "dev.jsonl", [
        {"qID": f"q{i}", "sentence": f"The {w[i]} is bigger than the stone because _ is big.",
         "option1": w[i], "option2": "stone", "answer": "12"[i % 2]} for i in range(10)])
    # Choices "0.5" and "1" must stay those strings (a pandas-based loader reads 1.0).
    mmlu = [[f"What is {i} + 1?", "0.5", "1", str(i + 1), "None", "C"] for i in range(10)]
    write_csv(root / "mmlu" / "test" / "abstract_algebra_test.csv", mmlu)
    write_csv(root / "mmlu" / "dev" / "abstract_algebra_dev.csv", mmlu[5:])
    head = ["", "Question", "A", "B", "C", "D", "Answer"]
    write_csv(root / "cmmlu" / "test" / "agronomy.csv",
              [head] + [[str(i), f"问题{i}", "甲", "乙", "丙", "丁", "ABCD"[i % 4]]
                        for i in range(10)])
    write_csv(root / "ceval" / "val" / "accountant_val.csv",
              [["id", "question", "A", "B", "C", "D", "answer"]]
              + [[str(i), f"会计问题{i}____。", "甲", "乙", "丙", "丁", "ABCD"[i % 4]]
                 for i in range(10)])
    write_csv(root / "ceval" / "dev" / "accountant_dev.csv",
              [["id", "question", "A", "B", "C", "D", "answer", "explanation"]]
              + [[str(i), f"例题{i}", "甲", "乙", "丙", "丁", "A", "因为"] for i in range(5)])
    return {k: str(root / k) for k in ("gsm8k", "arc_challenge", "hellaswag", "winogrande",
                                       "mmlu", "cmmlu", "ceval")}


def suite_cfg(pipeline, tmp_path: Path, benchmarks: dict[str, str], metrics: str | None = None,
              **lm_eval) -> EvalStage:
    _, params = pipeline
    params = copy.deepcopy(params)
    params["benchmarks"].update(benchmarks)
    if metrics:
        params["paths"]["metrics"] = metrics
    params["eval"]["limit"] = None
    # gsm8k: one example and 16 new tokens keep the generated task at seconds on CPU.
    params["eval"]["lm_eval"]["gsm8k"].update(num_fewshot=1, max_gen_toks=16)
    for name, opts in lm_eval.items():
        params["eval"]["lm_eval"][name].update(opts)
    return stage_cfg(EvalStage, params)


BCB_TASK = {"task_id": "BigCodeBench/1", "complete_prompt": "def task_func(x):\n",
            "instruct_prompt": "Return x.", "canonical_solution": "    return x\n",
            "code_prompt": "def task_func(x):\n", "entry_point": "task_func",
            "test": "import unittest\nclass TestCases(unittest.TestCase):\n"
                    "    def test_x(self):\n        self.assertEqual(task_func(1), 1)\n",
            "libs": "[]"}


@pytest.fixture(scope="module")
def scored(pipeline, tmp_path_factory):
    """eval (every lm-eval suite and bigcodebench-complete, ten-row files) for base, sft and
    dpo, then summary, as the pipeline runs them: {"cfg", "summary", (suite, variant): rows}."""
    from stages import eval as eval_stage
    from stages import summary
    from stages.config import SummaryStage

    tmp = tmp_path_factory.mktemp("lm-eval")
    data = ten_row_files(tmp / "data")
    bcb = tmp / "data" / "BigCodeBench.jsonl"
    bcb.write_text("".join(json.dumps({**BCB_TASK, "task_id": f"BigCodeBench/{i}"}) + "\n"
                           for i in range(10)))
    cfg = suite_cfg(pipeline, tmp, {**data, "bigcodebench": str(bcb)},
                    metrics=str(tmp / "metrics"))
    names = [*lt.NAMES, "bigcodebench-complete"]
    out = {"cfg": cfg}
    for variant in ("base", "sft", "dpo"):
        for name in names:
            eval_stage.main(variant, name, cfg)
            out[name, variant] = read_jsonl(cfg.paths.tasks_file(variant, name))
    _, params = pipeline
    params = copy.deepcopy(params)
    params["paths"]["metrics"] = str(tmp / "metrics")
    params["eval"]["suites"] = names
    summary_cfg = stage_cfg(SummaryStage, params)
    out["summary"], out["retention"] = summary.main(summary_cfg), summary_cfg.eval.retention
    return out


def test_each_suite_runs_in_the_pipeline_and_the_summary_pairs_it(scored):
    for name in [*lt.NAMES, "bigcodebench-complete"]:
        metric = {"gsm8k": "exact_match", "bigcodebench-complete": "pass@1"}.get(name, "acc")
        row = scored["summary"][name][metric]
        for variant in ("sft", "dpo"):
            assert row[f"{variant}_n"] == 10
            assert row[f"{variant}_ci95_low"] <= row[f"{variant}_delta"] <= row[
                f"{variant}_ci95_high"]
            assert 0 <= row[f"{variant}_p"] <= 1 and row[f"{variant}_verdict"]
            assert row[f"{variant}_delta"] == pytest.approx(row[variant] - row["base"], abs=1e-4)


@pytest.mark.parametrize("name", lt.NAMES)
def test_every_row_of_every_suite_is_scored_and_paired_by_its_doc_id(scored, name):
    cfg = scored["cfg"]
    base, sft = scored[name, "base"], scored[name, "sft"]
    subject = {"mmlu": "abstract_algebra/", "cmmlu": "agronomy/",
               "ceval-valid": "accountant/"}.get(name, "")
    assert [r["id"] for r in base] == [f"{subject}{i}" for i in range(10)]
    assert [r["id"] for r in sft] == [r["id"] for r in base]
    assert all(isinstance(r["passed"], bool) for r in base + sft)
    # The same document on both sides: the harness hashes each document it scores.
    assert [r["doc_hash"] for r in sft] == [r["doc_hash"] for r in base]
    metrics = lt.aggregate(cfg, base)
    judged = "exact_match" if name == "gsm8k" else "acc"
    assert metrics[judged] == round(sum(r["passed"] for r in base) / 10, 4)
    assert metrics["documents"] == 10 and metrics["lm_eval_version"]
    assert len(metrics["dataset_md5"]) == 32


def test_the_adapter_is_applied_unmerged(scored):
    """The adapter changes the scores (base and sft log-likelihoods differ) and scoring
    leaves it unmerged: the LoRA layers are still separate after a suite ran on them."""
    lls = {v: [r["loglikelihoods"] for n in lt.NAMES if n != "gsm8k" for r in scored[n, v]]
           for v in ("base", "sft")}
    assert lls["base"] != lls["sft"]
    cfg = scored["cfg"]
    sft = load_variant(cfg.paths, "sft", cfg.model.dtype)
    lt.score(cfg, sft, load_tokenizer(cfg.paths.model_dir("base")),
             lt.probes(cfg, "arc_challenge"))
    lora = [m for m in sft.modules() if hasattr(m, "merged")]
    assert lora and not any(m.merged for m in lora)


def test_multiple_choice_outcome_is_the_argmax_of_the_choice_loglikelihoods(scored, pipeline):
    """Recompute ARC's log-likelihoods with a plain forward pass: context "Question: <stem>
    \\nAnswer:", continuation " <choice>", summed log-probs of the continuation tokens."""
    cfg = scored["cfg"]
    model = load_variant(cfg.paths, "base", cfg.model.dtype)
    tok = load_tokenizer(cfg.paths.model_dir("base"))
    rows = [json.loads(line) for line in
            Path(cfg.benchmarks.arc_challenge, "ARC-Challenge-Test.jsonl").read_text().splitlines()]
    for row, scored_row in zip(rows, scored["arc_challenge", "base"], strict=True):
        context = f"Question: {row['question']['stem']}\nAnswer:"
        lls = []
        for choice in row["question"]["choices"]:
            whole = tok(context + " " + choice["text"])["input_ids"]
            n_ctx = len(tok(context)["input_ids"])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0], -1)
            lls.append(sum(float(logp[i - 1, whole[i]]) for i in range(n_ctx, len(whole))))
        best = max(range(len(lls)), key=lls.__getitem__)
        labels = [c["label"] for c in row["question"]["choices"]]
        assert scored_row["loglikelihoods"] == pytest.approx(lls, abs=1e-3)
        assert scored_row["reply"] == str(best)
        assert scored_row["passed"] == (best == labels.index(row["answerKey"]))


def test_prompts_are_the_harness_templates_filled_with_the_local_rows(pipeline, tmp_path):
    """The converted rows fill the harness's own templates: MMLU's subject line, choices
    as they are written (0.5, 1, None; never 1.0 or nan) and 1 dev example; C-Eval's
    Chinese answer cue."""
    data = ten_row_files(tmp_path / "data")
    cfg = suite_cfg(pipeline, tmp_path, data, mmlu={"num_fewshot": 1, "limit": 1},
                    **{"ceval-valid": {"limit": 1}})
    prompts = harness_prompts(cfg, "mmlu", tmp_path / "mmlu")
    assert prompts == [
        "The following are multiple choice questions (with answers) about abstract algebra."
        "\n\nWhat is 5 + 1?\nA. 0.5\nB. 1\nC. 6\nD. None\nAnswer: C\n\n"
        "What is 0 + 1?\nA. 0.5\nB. 1\nC. 1\nD. None\nAnswer:"]
    prompts = harness_prompts(cfg, "ceval-valid", tmp_path / "ceval")
    assert prompts == ["以下是中国关于注册会计师的单项选择题，请选出其中的正确答案。\n\n"
                       "会计问题0____。\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案："]


def harness_prompts(cfg, name: str, out: Path) -> list[str]:
    from lm_eval.tasks import TaskManager, get_task_dict

    out.mkdir()
    task = lt.write_tasks(cfg, name, out)
    tasks = get_task_dict([task], TaskManager(include_path=str(out), include_defaults=False))
    leaves = [t for t in flatten(tasks)]
    prompts = []
    for t in leaves:
        t.set_fewshot_seed(cfg.seed)
        t.build_all_requests(limit=1, rank=0, world_size=1)
        prompts.append(t.instances[0].args[0])
    return prompts


def flatten(tasks):
    for value in tasks.values():
        if isinstance(value, dict):
            yield from flatten(value)
        else:
            yield value


def test_few_shot_without_its_split_comes_from_the_scored_split_minus_the_document(
        pipeline, tmp_path):
    data = ten_row_files(tmp_path / "data")
    Path(data["gsm8k"], "train.jsonl").unlink()
    cfg = suite_cfg(pipeline, tmp_path, data, gsm8k={"num_fewshot": 3, "limit": 1})
    [prompt] = harness_prompts(cfg, "gsm8k", tmp_path / "g")
    assert prompt.count("Question:") == 4  # three examples, then the question
    assert prompt.endswith("Question: Tom has 0 apples and buys 2 more. How many?\nAnswer:")
    assert prompt.count("Tom has 0 apples") == 1
    assert lt.aggregate(cfg, [{"suite": "gsm8k", "passed": False}])["fewshot_split"] == "test"


@pytest.mark.parametrize("break_it, message", [
    (lambda d: write_csv(Path(d["mmlu"]) / "test" / "abstract_algebra_test.csv",
                         [["q", "a", "b", "c", "d", "E"]]), "abstract_algebra_test.csv:1"),
    (lambda d: write_csv(Path(d["mmlu"]) / "test" / "abstract_algebra_test.csv",
                         [["q", "a", "b", "c", "A"]]), "5 columns, not 6"),
    (lambda d: write_csv(Path(d["mmlu"]) / "test" / "algebra_basics_test.csv",
                         [["q", "a", "b", "c", "d", "A"]]), "subjects the harness does not know"),
])
def test_bad_local_files_are_named_with_the_row(pipeline, tmp_path, break_it, message):
    data = ten_row_files(tmp_path / "data")
    break_it(data)
    cfg = suite_cfg(pipeline, tmp_path, data)
    with pytest.raises(DataError, match=message):
        lt.probes(cfg, "mmlu")


def test_a_suite_without_its_data_says_which_key_to_set(pipeline, tmp_path):
    cfg = suite_cfg(pipeline, tmp_path, {})
    with pytest.raises(ValueError, match=r"-S benchmarks.ceval=DIR"):
        lt.probes(cfg, "ceval-valid")
    cfg = suite_cfg(pipeline, tmp_path, {"arc_challenge": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="ARC-Challenge-Test.jsonl not found"):
        lt.probes(cfg, "arc_challenge")


def test_decoding_knobs_are_written_into_the_generated_task(pipeline, tmp_path):
    import yaml

    cfg = suite_cfg(pipeline, tmp_path, ten_row_files(tmp_path / "data"))
    lt.write_tasks(cfg, "gsm8k", tmp_path)
    gen = yaml.safe_load((tmp_path / "stages_gsm8k.yaml").read_text())["generation_kwargs"]
    assert gen["do_sample"] is False and gen["repetition_penalty"] == 1.0
    assert gen["num_beams"] == 1 and gen["max_gen_toks"] == 16


@pytest.mark.skipif(not BENCH.is_dir(), reason=f"{BENCH} (shared benchmark copies) not present")
def test_shared_copies_give_the_published_counts_and_hashes(pipeline, tmp_path):
    """The md5 of the test files alone is the figure in benchmarks/SOURCES.md."""
    cfg = suite_cfg(pipeline, tmp_path, {"gsm8k": str(BENCH / "gsm8k"),
                                         "arc_challenge": str(BENCH / "arc_challenge"),
                                         "mmlu": str(BENCH / "mmlu")})
    assert len(lt.probes(cfg, "gsm8k")) == 1319
    assert len(lt.probes(cfg, "arc_challenge")) == 1172
    assert lt.data_md5(cfg, "arc_challenge") == "4c137f586276b7755904b2e17f3556ad"
    assert lt.data_md5(cfg, "gsm8k") == "6493e22fc90d491ae8da0b88ffcfebae"
    mmlu = lt.probes(cfg, "mmlu")
    assert len(mmlu) == 14042 and len({p["task"] for p in mmlu}) == 57


def test_the_forgetting_score_averages_the_retention_suites_paired_by_id(scored):
    from stages.stats.forgetting import retention

    outcomes = {}
    for name in lt.NAMES:
        sft = {r["id"]: r["passed"] for r in scored[name, "sft"]}
        outcomes[name] = {"base": [r["passed"] for r in scored[name, "base"]],
                          "sft": [sft[r["id"]] for r in scored[name, "base"]]}
    row = retention(list(scored["retention"]), outcomes, "sft")
    assert row["suites"] == ["hellaswag", "arc_challenge", "winogrande"]
    mean_delta = sum((sum(outcomes[s]["sft"]) - sum(outcomes[s]["base"])) / 10
                     for s in row["suites"]) / 3
    assert row["sft_delta"] == round(mean_delta, 4)
    assert row["sft_ci95_low"] <= row["sft_delta"] <= row["sft_ci95_high"]


# The whole of adding an lm-eval suite: one registry entry (its Layout reuses the ARC
# converter) and its data path in params. Nothing else is edited.
ARC_EASY = '''    SuiteEntry("arc_easy", LM_EVAL, "arc_easy", "ARC-Easy-Test.jsonl, AI2's file.",
               Layout("arc/arc_easy.yaml", {"test": "ARC-Easy-Test.jsonl"}, "test", None,
                      "arc", aggregate=("acc", "acc_norm"))),
'''
WITH_ARC_EASY = '''
import sys
import yaml
from stages import suites
from stages.config import Config, EvalStage, stage_params, validate

params = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
params["benchmarks"]["arc_easy"] = sys.argv[2]
params["eval"]["suites"].append("arc_easy")
params["eval"]["budget"]["arc_easy"] = 0.02
validate(Config, params)
cfg = validate(EvalStage, stage_params(EvalStage, params))
suite = suites.get("arc_easy")
print(suite.__name__, [p["id"] for p in suite.probes(cfg, "arc_easy")])
'''


def test_an_lm_eval_suite_is_one_registry_entry_and_its_data_path(tmp_path):
    """A copy of stages/ with one more SuiteEntry: the config accepts the suite, its
    benchmarks key and its budget, and suites.get runs it (its probes from a local file)."""
    import shutil

    shutil.copytree(REPO / "stages", tmp_path / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    registry = tmp_path / "stages" / "config" / "suites.py"
    text = registry.read_text(encoding="utf-8")
    anchor = '    SuiteEntry("bigcodebench-complete"'
    registry.write_text(text.replace(anchor, ARC_EASY + anchor, 1), encoding="utf-8")
    write_jsonl(tmp_path / "arc_easy" / "ARC-Easy-Test.jsonl", [
        {"id": f"E{i}", "question": {"stem": f"Which is {WORDS[i]}?", "choices": [
            {"text": WORDS[(i + k) % 10], "label": lab} for k, lab in enumerate("ABCD")]},
         "answerKey": "A"} for i in range(3)])
    (tmp_path / "script.py").write_text(WITH_ARC_EASY, encoding="utf-8")
    done = subprocess.run([sys.executable, "script.py", str(REPO / "params.yaml"),
                           str(tmp_path / "arc_easy")], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stages.suites.lm_eval_tasks", "['0',", "'1',", "'2']"]
    with pytest.raises(ConfigError, match="arc_easy"):  # and without the entry, refused
        params = repo_params()
        params["eval"]["suites"].append("arc_easy")
        validate(Config, params)


def test_every_registered_suite_has_the_functions_of_its_kind():
    for name in names():
        suite = suites.get(name)
        assert isinstance(suite, suites.JudgedSuite | suites.ScoredSuite), name
