"""requirements.lock pins every requirement of the project and its dev extra inside
pyproject.toml's ranges, setup.sh installs from it (torch first), and the libraries that
compute the numbers are installed at the locked versions."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO
from stages.core.runinfo import LIBRARIES

LOCK = REPO / "requirements.lock"


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def unlocked(lock: dict[str, str]) -> list[str]:
    """Requirements the lock lacks or pins outside pyproject.toml's range (torch is setup.sh's)."""
    wrong = []
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        if name not in lock:
            wrong.append(f"{req.name}: not in requirements.lock")
        elif not req.specifier.contains(lock[name], prereleases=True):
            wrong.append(f"{req.name}: locked {lock[name]}, pyproject.toml says {req.specifier}")
    return wrong


def test_the_lock_pins_every_requirement_inside_its_range():
    lock = pins(LOCK.read_text(encoding="utf-8"))
    assert not unlocked(lock), (f"{unlocked(lock)}; regenerate the lock with the command in "
                                "its header")
    assert "torch" not in lock  # setup.sh installs the CPU build first; the lock must not move it


def test_a_missing_or_out_of_range_pin_is_named():
    lock = pins(LOCK.read_text(encoding="utf-8"))
    del lock["peft"]
    lock["pydantic"] = "1.10.0"
    assert unlocked(lock) == ["pydantic: locked 1.10.0, pyproject.toml says <3,>=2.7",
                              "peft: not in requirements.lock"]


def test_setup_installs_torch_then_the_lock_then_the_project_without_deps():
    lines = [line.strip() for line in (REPO / "setup.sh").read_text().splitlines()]
    torch = lines.index("python -m pip install --quiet torch==2.13.0")
    lock = lines.index("python -m pip install --quiet -r requirements.lock")
    project = lines.index("python -m pip install --quiet --no-deps -e .")
    assert torch < lock < project


def test_the_numeric_libraries_are_installed_at_the_locked_versions():
    """What `bash setup.sh` gives: a mismatch here means this environment was not installed
    from the lock, and its metrics are not the committed ones' (the run block says which)."""
    lock = pins(LOCK.read_text(encoding="utf-8"))
    wrong = {name: (version(name), lock[canonicalize_name(name)]) for name in LIBRARIES
             if name != "torch" and version(name) != lock[canonicalize_name(name)]}
    assert not wrong, f"installed vs locked: {wrong}; run `bash setup.sh`"
    assert version("torch").startswith("2.13.0")
