"""The layout's floors (README "Layout"): a module imports only from floors below its
own, or from its own package. Read from the source (every import, also those inside
functions), so a new upward import fails here before anyone has to find the cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"
# package -> floor; the DVC entry points (stages/<name>.py) are floor 5, the tools floor 6
FLOORS = {"core": 0, "config": 1, "data": 2, "sandbox": 2, "stats": 2, "models": 2,
          "generation": 3, "suites": 4, "tools": 6}
ENTRY_POINTS = 5


def place(module: str) -> tuple[str, int]:
    """(package, floor) of a dotted module under stages; the package's own __init__ (which
    pins numerics before anything loads) is below every floor."""
    parts = module.split(".")
    if len(parts) == 1:
        return "stages", -1
    if parts[1] in FLOORS:
        return parts[1], FLOORS[parts[1]]
    return "stages", ENTRY_POINTS


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str) -> set[str]:
    """Every stages module `source` imports; in `from stages(.pkg) import x`, x is a module."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "stages"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "stages":
            if node.module == "stages":
                out |= {f"stages.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def violations(sources: dict[str, str]) -> list[str]:
    """'<module> (floor f) imports <module> (floor g)' for each import that is not downward
    or within the module's own package."""
    found = []
    for name, source in sources.items():
        package, floor = place(name)
        if floor < 0:
            continue
        for target in sorted(imported(source)):
            tpackage, tfloor = place(target)
            if tpackage != package and tfloor >= floor:
                found.append(f"{name} (floor {floor}) imports {target} (floor {tfloor})")
    return found


def tree() -> dict[str, str]:
    # the sandbox's programs run inside the sandbox, on the standard library alone
    return {module_name(p): p.read_text(encoding="utf-8") for p in STAGES.rglob("*.py")
            if "programs" not in p.parts}


def test_no_module_imports_upward():
    sources = tree()
    assert len(sources) > 40
    assert violations(sources) == []


def test_every_package_has_a_floor():
    assert {p.parent.name for p in STAGES.glob("*/__init__.py")} == set(FLOORS)


@pytest.mark.parametrize("source, target", [
    ("from stages.suites import code\n", "stages.suites (floor 4)"),
    ("from stages.eval import main\n", "stages.eval (floor 5)"),
    ("from stages import eval as stage\n", "stages.eval (floor 5)"),
    ("def f():\n    import stages.generation\n", "stages.generation (floor 3)"),
    ("from stages.sandbox import run_many\n", "stages.sandbox (floor 2)"),  # a sibling floor
])
def test_an_upward_import_is_named(source, target):
    assert violations({"stages.stats.probe": source}) == [
        f"stages.stats.probe (floor 2) imports {target}"]
    # the same import from a floor above is fine
    assert violations({"stages.tools.probe": source}) == []
