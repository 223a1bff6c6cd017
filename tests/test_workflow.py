"""The CI workflows as GitHub reads them: pull requests run .ci/run's steps on a CPU runner,
then build the report against the PR's base branch and post it as one comment; the GPU
metrics job runs only by hand on a self-hosted GPU runner; every command they run names a
file or module that exists; .ci/run runs what the README says."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
PR = "pull-request.yml"
GPU = "gpu-metrics.yml"
CI_RUN = REPO / ".ci" / "run"
STICKY = "marocchino/sticky-pull-request-comment"


def workflow(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 (pyyaml) reads the key `on` as the boolean True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def triggers(doc: dict) -> set[str]:
    on = doc["on"]
    return {on} if isinstance(on, str) else set(on)


def only_job(doc: dict) -> dict:
    assert len(doc["jobs"]) == 1, f"expected one job, got {sorted(doc['jobs'])}"
    return next(iter(doc["jobs"].values()))


def action(step: dict) -> str:
    return step.get("uses", "").split("@")[0]


def words(script: str) -> list[str]:
    """Shell words of a script, comments dropped, `\\` continuations joined; operators such
    as `&&`, `|`, `;` come out as their own words."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def option(script: str, name: str) -> str:
    found = words(script)
    assert name in found, f"{name} missing from {script!r}"
    return found[found.index(name) + 1]


def index_of(steps: list[dict], what: str, match) -> int:
    hits = [i for i, step in enumerate(steps) if match(step)]
    assert hits, f"no step {what} in {[s.get('name') or s.get('uses') for s in steps]}"
    return hits[0]


def runs(step: dict, needle: str) -> bool:
    return needle in step.get("run", "")


def report_step(steps: list[dict]) -> dict:
    return steps[index_of(steps, "building the report", lambda s: runs(s, "stages.tools.report"))]


def references(script: str) -> list[tuple[str, str]]:
    """(kind, target) for every `bash FILE`, `python FILE.py` and `python -m MODULE`."""
    found = words(script)
    refs = []
    for i, word in enumerate(found[:-1]):
        nxt = found[i + 1]
        if word in ("bash", "sh") and not nxt.startswith("-"):
            refs.append(("file", nxt))
        elif word in ("python", "python3") and nxt == "-m":
            refs.append(("module", found[i + 2]))
        elif word in ("python", "python3") and nxt.endswith(".py"):
            refs.append(("file", nxt))
    return refs


def all_references() -> list[tuple[str, str, str]]:
    scripts = [(name, step["run"]) for name in (PR, GPU)
               for job in workflow(name)["jobs"].values() for step in job["steps"]
               if "run" in step]
    scripts.append((".ci/run", CI_RUN.read_text(encoding="utf-8")))
    return sorted({(source, kind, target) for source, script in scripts
                   for kind, target in references(script)})


# pull-request.yml


def test_pull_requests_trigger_the_cpu_workflow():
    assert "pull_request" in triggers(workflow(PR))


def test_the_pr_job_runs_on_a_github_hosted_cpu_runner():
    labels = only_job(workflow(PR))["runs-on"]
    assert isinstance(labels, str) and labels.startswith("ubuntu-"), labels


def test_pr_steps_run_in_ci_order():
    steps = only_job(workflow(PR))["steps"]
    checkout = index_of(steps, "actions/checkout", lambda s: action(s) == "actions/checkout")
    python = index_of(steps, "actions/setup-python",
                      lambda s: action(s) == "actions/setup-python")
    ci = index_of(steps, "running .ci/run", lambda s: runs(s, ".ci/run"))
    report = index_of(steps, "building the report", lambda s: runs(s, "stages.tools.report"))
    upload = index_of(steps, "actions/upload-artifact",
                      lambda s: action(s) == "actions/upload-artifact")
    comment = index_of(steps, STICKY, lambda s: action(s) == STICKY)
    assert checkout < python < ci < report < upload < comment
    # The report reads the base branch's commit: a shallow clone (the default) lacks it.
    assert steps[checkout]["with"]["fetch-depth"] == 0
    # Quoted: an unquoted 3.10 would be the float 3.1.
    assert steps[python]["with"]["python-version"] == "3.11"


def test_every_action_is_pinned_to_a_version():
    for name in (PR, GPU):
        for job in workflow(name)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    ref = step["uses"].partition("@")[2]
                    assert re.fullmatch(r"v\d+(\.\d+)*", ref), step["uses"]


def test_the_report_is_built_against_the_pr_base_branch():
    step = report_step(only_job(workflow(PR))["steps"])
    base = option(step["run"], "--base")
    # Through an env variable (no ${{ }} inside a script) or directly.
    for var, value in step.get("env", {}).items():
        base = base.replace(f"${var}", value)
    assert base == "origin/${{ github.base_ref }}"


def test_the_comment_is_the_report_under_one_header():
    doc = workflow(PR)
    steps = only_job(doc)["steps"]
    comments = [s for s in steps if action(s) == STICKY]
    assert len(comments) == 1
    comment = comments[0]["with"]
    assert comment.get("header"), "without a header every sticky comment shares one slot"
    for duplicating in ("append", "recreate", "hide_and_recreate", "only_create"):
        assert duplicating not in comment, f"{duplicating} would not update the comment in place"
    assert comment["path"] == option(report_step(steps)["run"], "--out")
    permissions = {**doc.get("permissions", {}), **only_job(doc).get("permissions", {})}
    assert permissions.get("pull-requests") == "write"


def test_plots_go_to_an_artifact_and_the_comment_links_it():
    steps = only_job(workflow(PR))["steps"]
    images = option(report_step(steps)["run"], "--images").rstrip("/")
    upload_at = index_of(steps, "actions/upload-artifact",
                         lambda s: action(s) == "actions/upload-artifact")
    upload = steps[upload_at]
    assert images in [p.rstrip("/") for p in upload["with"]["path"].split()]
    comment_at = index_of(steps, STICKY, lambda s: action(s) == STICKY)
    report_file = steps[comment_at]["with"]["path"]
    url = f"${{{{ steps.{upload['id']}.outputs.artifact-url }}}}"
    linking = [s for s in steps[upload_at + 1:comment_at]
               if url in s.get("env", {}).values() and f">> {report_file}" in s.get("run", "")]
    assert linking, "no step between the upload and the comment adds the artifact link"


def test_no_script_interpolates_expressions():
    """`${{ }}` inside `run:` is pasted into the script before bash reads it (script
    injection); values come in through `env:` instead."""
    for name in (PR, GPU):
        for job in workflow(name)["jobs"].values():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), (name, step.get("name"))


@pytest.mark.parametrize("source,kind,target", all_references(),
                         ids=lambda v: str(v))
def test_every_command_names_a_file_or_module_that_exists(source, kind, target):
    if kind == "file":
        assert (REPO / target).is_file(), f"{source} runs {target}, which does not exist"
        return
    path = REPO / (target.replace(".", "/") + ".py")
    if target.split(".")[0] == "stages":
        if target == "stages.tools.report" and not path.exists():
            pytest.skip("stages/tools/report.py is being written on another branch")
        assert path.is_file(), f"{source} runs python -m {target}: no {path.relative_to(REPO)}"
    else:
        assert importlib.util.find_spec(target) is not None, f"{source}: no module {target}"


# .ci/run


def readme_block_after(heading_text: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    after = readme[readme.index(heading_text):]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1).strip()


def test_ci_run_installs_and_tests_as_the_readme_says():
    script = CI_RUN.read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    install = readme_block_after("## Quick start").split("&&")[0].strip()
    test = readme_block_after("Run the tests")
    assert (install, test) == ("bash setup.sh", "python -m pytest -q")
    assert lines.index(install) < lines.index(test)
    gate = lines.index("python -m stages.tools.compose --check")
    assert lines.index(install) < gate < lines.index(test)


def test_ci_run_is_valid_bash():
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)


def report_block() -> str:
    script = CI_RUN.read_text(encoding="utf-8")
    return script[script.index("# The PR report"):]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True)


def run_report_block(cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", report_block()], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_ci_run_builds_the_report_as_the_workflow_does(tmp_path):
    """The block of .ci/run, run in a scratch repo: it skips with a reason until
    stages/tools/report.py exists and while there is one commit, then runs the module with
    --base HEAD~1 and --out as the workflow's step does."""
    git(tmp_path, "init", "-q")
    (tmp_path / "a").write_text("1")
    git(tmp_path, "add", "a")
    git(tmp_path, "commit", "-qm", "one")
    done = run_report_block(tmp_path)
    assert done.returncode == 0 and "stages/tools/report.py does not exist" in done.stdout

    stub = tmp_path / "stages" / "tools"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text("")
    (stub / "report.py").write_text(
        "import sys, pathlib\n"
        "args = sys.argv[1:]\n"
        "out = pathlib.Path(args[args.index('--out') + 1])\n"
        "out.write_text(' '.join(args))\n")
    done = run_report_block(tmp_path)
    assert done.returncode == 0 and "single commit" in done.stdout

    git(tmp_path, "add", "stages")
    git(tmp_path, "commit", "-qm", "two")
    done = run_report_block(tmp_path)
    assert done.returncode == 0, done.stderr
    written = Path(done.stdout.strip().removeprefix("report: "))
    assert written.read_text().startswith("--base HEAD~1 --out ")
    workflow_args = words(report_step(only_job(workflow(PR))["steps"])["run"])
    assert workflow_args[:3] == ["python", "-m", "stages.tools.report"]


# gpu-metrics.yml


def test_the_gpu_job_runs_only_by_hand_on_a_self_hosted_gpu_runner():
    doc = workflow(GPU)
    assert triggers(doc) == {"workflow_dispatch"}
    assert set(only_job(doc)["runs-on"]) == {"self-hosted", "gpu"}


def test_the_gpu_job_offers_the_conf_models_and_rebuilds_with_dvc_repro():
    doc = workflow(GPU)
    model = doc["on"]["workflow_dispatch"]["inputs"]["model"]
    shipped = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert set(model["options"]) <= shipped and model["default"] in model["options"]
    step = next(s for s in only_job(doc)["steps"] if runs(s, "dvc repro"))
    found = words(step["run"])
    compose = found.index("stages.tools.compose")
    assert found.index("dvc") > compose and "model=$MODEL" in found[compose:]
    assert step["env"]["MODEL"] == "${{ inputs.model }}"


# the stale-lock gate (python -m stages.tools.compose --check)

PIPELINE = """\
stages:
  copy:
    cmd: python hash_copy.py
    always_changed: true
    deps: [hash_copy.py]
    outs:
      - copy.json:
          cache: false
  ev:
    cmd: python ev.py
    deps: [copy.json, ev.py]
    outs: [tasks/x.jsonl]
    metrics:
      - metrics/x.json:
          cache: false
  summary:
    cmd: python -c "open('summary.txt', 'w').write(open('metrics/x.json').read())"
    deps: [metrics, tasks]
    outs: [summary.txt]
"""
EV = ("import os\n"
      "os.makedirs('metrics', exist_ok=True); os.makedirs('tasks', exist_ok=True)\n"
      "open('metrics/x.json', 'w').write('{\"x\": 1}')\n"
      "open('tasks/x.jsonl', 'w').write('{\"id\": 1}\\n')\n")


# The local_copy stage's shape: hash a folder outside the repository (named by LOCAL_COPY).
COPY = ("import hashlib, json, os, pathlib\n"
        "root = pathlib.Path(os.environ['LOCAL_COPY'])\n"
        "h = hashlib.sha256(b''.join(p.read_bytes() for p in sorted(root.iterdir())))\n"
        "open('copy.json', 'w').write(json.dumps({'sha256': h.hexdigest()}))\n")


def dvc(cwd: Path, *args: str) -> None:
    import sys

    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True,
                   capture_output=True)


def fresh_clone(origin: Path, to: Path) -> Path:
    """A clone as CI has it: git files only, no DVC cache."""
    subprocess.run(["git", "clone", "-q", str(origin), str(to)], check=True)
    return to


@pytest.fixture(scope="module")
def committed_pipeline(tmp_path_factory):
    """A two-stage git + DVC repo laid out like the project's eval -> summary: committed
    metrics and DVC-cached per-task files in separate folders, the cached one git-ignored."""
    repo = tmp_path_factory.mktemp("origin")
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text(PIPELINE)
    (repo / "ev.py").write_text(EV)
    (repo / "hash_copy.py").write_text(COPY)
    local = tmp_path_factory.mktemp("local-copy")
    (local / "weights.bin").write_bytes(b"weights v1")
    os.environ["LOCAL_COPY"] = str(local)
    (repo / ".gitignore").write_text("/tasks/\n")
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline")
    return repo


def test_a_fresh_clone_of_a_reproduced_commit_passes(committed_pipeline, tmp_path):
    from stages.tools.compose import stale_stages

    clone = fresh_clone(committed_pipeline, tmp_path / "clone")
    assert not (clone / "tasks").exists() and not (clone / ".dvc" / "cache").exists()
    assert stale_stages(clone) == []


def test_a_changed_local_copy_reruns_what_depends_on_it_and_only_then(committed_pipeline,
                                                                      tmp_path):
    """The always-changed stage runs on every repro, but ev reruns only when the copy's
    content changed; the stale-lock check never counts the always-changed stage."""
    import yaml

    work = fresh_clone(committed_pipeline, tmp_path / "work")
    dvc(work, "repro", "-q")                        # same copy: ev is not rerun
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert lock == yaml.safe_load((committed_pipeline / "dvc.lock").read_text())["stages"]
    (Path(os.environ["LOCAL_COPY"]) / "weights.bin").write_bytes(b"weights v2")
    try:
        dvc(work, "repro", "-q")
        after = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    finally:
        (Path(os.environ["LOCAL_COPY"]) / "weights.bin").write_bytes(b"weights v1")
    assert after["ev"]["deps"] != lock["ev"]["deps"]   # ev saw the new copy.json


def test_code_changed_without_repro_fails_naming_the_stage(committed_pipeline, tmp_path):
    from stages.tools.compose import stale_stages

    work = fresh_clone(committed_pipeline, tmp_path / "work")
    (work / "ev.py").write_text(EV.replace('": 1}', '": 2}'))
    git(work, "commit", "-qam", "ev.py changed, dvc.lock not")
    assert stale_stages(fresh_clone(work, tmp_path / "ci")) == ["ev"]


def test_a_stale_stage_whose_inputs_the_clone_lacks_is_named(committed_pipeline, tmp_path):
    """summary reads the cached tasks/: dvc cannot hash what a clone lacks and stops at it,
    and the check names it instead of failing on dvc's error."""
    from stages.tools.compose import stale_stages

    work = fresh_clone(committed_pipeline, tmp_path / "work")
    (work / "dvc.yaml").write_text(PIPELINE.replace("'summary.txt', 'w'", "'summary.txt', 'wt'"))
    git(work, "commit", "-qam", "summary's command changed, dvc.lock not")
    stale = stale_stages(fresh_clone(work, tmp_path / "ci"))
    assert len(stale) == 1 and stale[0].startswith("summary (and the stages after it")


def test_a_folder_dep_mixing_committed_and_cached_files_would_false_alarm(committed_pipeline,
                                                                          tmp_path):
    """Why metrics/tasks/ is apart from metrics/eval/: with the cached file inside the
    committed folder a clone lacks it, the folder hashes differently, and summary reads as
    stale although nothing changed."""
    from stages.tools.compose import stale_stages

    work = fresh_clone(committed_pipeline, tmp_path / "work")
    (work / "dvc.yaml").write_text(PIPELINE.replace("tasks/x.jsonl", "metrics/x.jsonl")
                                   .replace("[metrics, tasks]", "[metrics]"))
    (work / "ev.py").write_text(EV.replace("'tasks/x.jsonl'", "'metrics/x.jsonl'"))
    (work / ".gitignore").write_text("/metrics/x.jsonl\n")
    dvc(work, "repro", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "cached file inside the committed folder")
    assert stale_stages(work) == []  # with the cache: fine
    assert stale_stages(fresh_clone(work, tmp_path / "ci")) == ["summary"]
