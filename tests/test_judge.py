"""stages.tools.judge: replies from anywhere, scored by the eval suites' own judges. It must agree
with the eval stage probe by probe, pass plain correct replies and fail gamed ones."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from test_evalplus import TASKS as HUMANEVAL

from conftest import REPO, read_json, repo_params, stage_cfg, workspace
from stages.config import StageError
from stages.core.io import read_jsonl
from stages.sandbox.execute import sandbox_problem

needs_sandbox = pytest.mark.skipif(sandbox_problem() is not None,
                                   reason="needs the bubblewrap sandbox (README setup)")
PROBES = REPO / "data" / "sources" / "probes"


def judge(tmp_path, monkeypatch, params: dict, suite: str, replies: list[dict]) -> dict:
    """Run `python -m stages.tools.judge` in tmp_path with `params` as its params.yaml."""
    from stages.tools import judge as judge_stage

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    path = tmp_path / f"{suite}.replies.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replies))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / f"{suite}.scored.json"
    judge_stage.main(["--suite", suite, "--replies", str(path), "--out", str(out)])
    return read_json(out)


def sources_only(tmp_path) -> dict:
    """The repo's params with nothing curated: judge reads data/sources/probes/."""
    params = repo_params()
    params["paths"].update(sources=str(REPO / "data" / "sources"),
                           curated=str(tmp_path / "not-curated"))
    return params


@needs_sandbox
@pytest.mark.parametrize("suite", ["code", "identity", "knowledge", "dimensions"])
def test_judge_reproduces_the_eval_stages_verdicts(pipeline, tmp_path, monkeypatch, suite):
    from stages import eval as eval_stage
    from stages.config import EvalStage

    params = workspace(pipeline, tmp_path)
    root = pipeline[0]
    params["paths"]["models"] = str(root / "models")
    eval_stage.main("sft", suite, stage_cfg(EvalStage, params))
    tasks = read_jsonl(tmp_path / "metrics" / "tasks" / "sft" / f"{suite}.jsonl")
    scored = judge(tmp_path, monkeypatch, params, suite,
                   [{"id": t["id"], "reply": t["reply"]} for t in tasks])
    assert [(p["id"], p["passed"]) for p in scored["probes"]] == \
        [(t["id"], t["passed"]) for t in tasks]
    metrics = read_json(tmp_path / "metrics" / "eval" / "sft" / f"{suite}.json")[suite]
    del metrics["decoding"]  # how eval generated the replies; the judge only reads them
    assert {k: scored[k] for k in metrics} == metrics


def reference_replies() -> dict[str, list[dict]]:
    """The ideal reply to every built-in probe, identity filled in as params.yaml says."""
    from stages.data.formats import code_answer, dimension_reference, knowledge_answer

    identity = repo_params()["identity"]
    fill = {lang: (identity["name"][lang], identity["author"][lang]) for lang in ("en", "zh")}
    return {
        "code": [{"id": t["id"], "reply": code_answer(t["solution"])}
                 for t in read_jsonl(PROBES / "code.jsonl")],
        "knowledge": [{"id": p["id"], "reply": knowledge_answer(p)}
                      for p in read_jsonl(PROBES / "knowledge.jsonl")],
        "identity": [{"id": p["id"], "reply": p["response"].replace("{{NAME}}", fill[p["lang"]][0])
                      .replace("{{AUTHOR}}", fill[p["lang"]][1])}
                     for p in read_jsonl(PROBES / "identity.jsonl")],
        "dimensions": [{"id": i["id"], "reply": dimension_reference(i)}
                       for i in read_jsonl(PROBES / "dimensions.jsonl")],
    }


@needs_sandbox
@pytest.mark.parametrize("suite,metric", [("code", "pass@1"), ("knowledge", "accuracy"),
                                          ("identity", "consistency"), ("dimensions", "score")])
def test_plain_correct_replies_pass_every_probe(tmp_path, monkeypatch, suite, metric):
    scored = judge(tmp_path, monkeypatch, sources_only(tmp_path), suite,
                   reference_replies()[suite])
    failed = [(p["id"], p["detail"]) for p in scored["probes"] if not p["passed"]]
    assert not failed and scored[metric] == 1.0


def gamed(suite: str) -> list[dict]:
    """Replies that would pass a naive judge: each must fail."""
    params = repo_params()
    original = params["model"]["identity"]
    out = []
    for row in reference_replies()[suite]:
        reply = row["reply"]
        if suite == "identity":        # credits the original author too
            lang = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in reply) else "en"
            reply += f" {original['author'][lang]}"
        elif suite == "knowledge":     # a shotgun of every answer
            reply = ", ".join(r["reply"].rstrip(".。") for r in reference_replies()["knowledge"])
        out.append({"id": row["id"], "reply": reply})
    return out


@pytest.mark.parametrize("suite,metric", [("knowledge", "accuracy"), ("identity", "consistency")])
def test_gamed_replies_fail(tmp_path, monkeypatch, suite, metric):
    scored = judge(tmp_path, monkeypatch, sources_only(tmp_path), suite, gamed(suite))
    assert scored[metric] == 0.0, [p for p in scored["probes"] if p["passed"]]


def negated(suite: str) -> list[dict]:
    """Every built-in probe's correct answer, denied: each must fail."""
    from stages.data.formats import knowledge_answer

    identity = repo_params()["identity"]
    out = []
    if suite == "knowledge":
        for p in read_jsonl(PROBES / "knowledge.jsonl"):
            answer = knowledge_answer(p).rstrip(".。")
            reply = f"不是{answer}。" if p["lang"] == "zh" else f"It is not {answer}."
            out.append({"id": p["id"], "reply": reply})
    else:
        for p in read_jsonl(PROBES / "identity.jsonl"):
            name, author = identity["name"][p["lang"]], identity["author"][p["lang"]]
            reply = (f"我不是{name}，也并非由{author}开发。" if p["lang"] == "zh"
                     else f"I am not {name}, and I wasn't made by {author}.")
            out.append({"id": p["id"], "reply": reply})
    return out


@pytest.mark.parametrize("suite,metric", [("knowledge", "accuracy"), ("identity", "consistency")])
def test_negated_replies_fail(tmp_path, monkeypatch, suite, metric):
    scored = judge(tmp_path, monkeypatch, sources_only(tmp_path), suite, negated(suite))
    assert scored[metric] == 0.0, [p for p in scored["probes"] if p["passed"]]


@needs_sandbox
def test_echoing_the_code_or_naming_no_line_fails_the_dimensions(tmp_path, monkeypatch):
    items = read_jsonl(PROBES / "dimensions.jsonl")
    replies = []
    for item in items:
        if item["dimension"] == "explanation":
            reply = f"```python\n{item['code']}\n```"         # the code, explained by itself
        elif item["dimension"] == "localisation":
            reply = f"{item['faulty_line']}"                  # a number, no line named
        else:
            reply = f"```python\n{item.get('code', 'pass')}\n```"  # the bug kept / no solution
        replies.append({"id": item["id"], "reply": reply})
    scored = judge(tmp_path, monkeypatch, sources_only(tmp_path), "dimensions", replies)
    assert scored["explanation"] == 0.0 and scored["localisation"] == 0.0
    assert scored["repair"] == 0.0


def test_unknown_missing_and_repeated_ids_are_named(tmp_path, monkeypatch):
    rows = copy.deepcopy(reference_replies()["knowledge"])
    first = rows[0]["id"]
    rows[1] = {"id": "knowledge/en/99", "reply": "Paris"}
    rows.append({"id": first, "reply": "again"})
    with pytest.raises(StageError) as err:
        judge(tmp_path, monkeypatch, sources_only(tmp_path), "knowledge", rows)
    message = str(err.value)
    assert "'knowledge/en/99' is no probe of this suite" in message
    assert f"a second reply for {first!r}" in message
    assert "no reply for 1 probe(s): knowledge/en/02" in message


def test_perplexity_is_refused_with_the_command_that_scores_it(tmp_path, monkeypatch):
    with pytest.raises(StageError, match="scores the model itself"):
        judge(tmp_path, monkeypatch, sources_only(tmp_path), "perplexity", [])


def test_a_probe_file_without_ids_or_with_a_repeated_id_is_named(tmp_path):
    from stages.suites import read_probes

    path = tmp_path / "probes.jsonl"
    path.write_text('{"id": "a"}\n{"question": "no id"}\n')
    with pytest.raises(StageError, match=r"probes\.jsonl:2: probe without a string \"id\""):
        read_probes(path)
    path.write_text('{"id": "a"}\n\n{"id": "a"}\n')
    with pytest.raises(StageError, match=r"probes\.jsonl:3: probe id 'a' is already used on "
                                         "line 1"):
        read_probes(path)


@needs_sandbox
def test_judge_reproduces_the_humaneval_plus_verdicts(pipeline, tmp_path, monkeypatch):
    from stages import eval as eval_stage
    from stages.config import EvalStage
    from stages.suites.evalplus import INSTRUCTION

    bench = tmp_path / "data" / "benchmarks" / "mini-humanevalplus.jsonl"
    bench.parent.mkdir(parents=True)
    bench.write_text("".join(json.dumps({**t, "contract": "", "atol": 0}) + "\n"
                             for t in HUMANEVAL[:2]))
    params = workspace(pipeline, tmp_path)
    params["paths"]["models"] = str(pipeline[0] / "models")
    params["benchmarks"]["humanevalplus"] = "data/benchmarks/mini-humanevalplus.jsonl"
    monkeypatch.chdir(tmp_path)
    eval_stage.main("sft", "humaneval+", stage_cfg(EvalStage, params))
    tasks = read_jsonl(tmp_path / "metrics" / "tasks" / "sft" / "humaneval+.jsonl")
    assert all(t["prompt"].startswith(INSTRUCTION) for t in tasks)
    scored = judge(tmp_path, monkeypatch, params, "humaneval+",
                   [{"id": t["id"], "reply": t["reply"]} for t in tasks])
    assert [(p["id"], p["passed"]) for p in scored["probes"]] == \
        [(t["id"], t["passed"]) for t in tasks]
    # a canonical solution passes and a wrong one fails, with evalplus's reason
    fixed = judge(tmp_path, monkeypatch, params, "humaneval+", [
        {"id": "HumanEval/0", "reply": "```python\ndef add(a, b):\n    return a + b\n```"},
        {"id": "HumanEval/1", "reply": "```python\ndef is_even(n):\n    return n % 2 == 1\n```"}])
    assert [p["passed"] for p in fixed["probes"]] == [True, False]
    assert fixed["probes"][1]["failure"] == "wrong_answer" and fixed["pass@1"] == 0.5


@pytest.mark.parametrize("argv,message", [
    (["--suite", "knowledge", "--replies", "r.jsonl", "--sanitize"],
     "--sanitize: only with --samples"),
    (["--suite", "code", "--replies", "r.jsonl", "--dataset-path", "he.jsonl"],
     "--dataset-path: only with --samples"),
    (["--suite", "knowledge", "--replies", "r.jsonl", "--samples", "s.jsonl"],
     "not allowed with argument"),
])
def test_judge_options_of_the_samples_path_need_samples(argv, message, capsys):
    from stages.tools import judge as judge_stage

    with pytest.raises(SystemExit):
        judge_stage.main(argv)
    assert message in capsys.readouterr().err


def test_judge_samples_take_an_evalplus_suite(tmp_path):
    from stages.config import StageError
    from stages.tools import judge as judge_stage

    with pytest.raises(StageError, match=r"--suite must be one of \['humaneval\+', 'mbpp\+'\]"):
        judge_stage.main(["--suite", "knowledge", "--samples", str(tmp_path / "s.jsonl")])
