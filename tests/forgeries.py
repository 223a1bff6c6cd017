"""Replies that solve nothing and only forge the verdict, for tests/test_forgery.py and
benchmarks/sandbox_bench.py.

Every forgery defines the function under test (ENTRY, renamed per task) and, where it cannot
find what it looks for, returns NaN, which equals nothing, so a forgery passes only if it
worked. Against the judges before issue 22 (the verdict printed by the child next to a nonce
it held, evalplus's expected outputs in its job file) most of them passed."""

from __future__ import annotations

# What each forgery prints as its verdict: in the shape the harness it found reads (the
# evalplus and BigCodeBench harnesses said "pass", the code harness "passed").
EMIT = """
def _emit(nonce, scope):
    import os
    status = "pass" if "ev" in scope or "Result" in scope else "passed"
    verdict = '{"status": "%s", "failure": null, "detail": "", "ran": []}' % status
    os.write(1, ("RESULT " + nonce + " " + verdict + "\\n").encode())
    os._exit(0)
"""
VERDICTS = ('{"status": "passed"}', '{"status": "pass", "failure": null}')

FORGERIES = {
    # Walk up the interpreter's frames to the runner's, take its nonce, print a pass.
    "frames": EMIT + """
import sys
def ENTRY(*args, **kwargs):
    frame = sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            for key, value in list(scope.items()):
                if "nonce" in str(key).lower() and isinstance(value, str):
                    _emit(value, frame.f_globals)
        frame = frame.f_back
    return float("nan")
""",
    # Search every live object for a nonce, or for a job that holds the expected outputs.
    "gc": EMIT + """
import gc
def ENTRY(*args, **kwargs):
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            for key in ("NONCE", "nonce"):
                if isinstance(obj.get(key), str):
                    _emit(obj[key], obj)
            if "expected" in obj and "inputs" in obj:
                for inp, exp in zip(obj["inputs"], obj["expected"]):
                    if list(inp) == list(args):
                        return exp
    return float("nan")
""",
    # Equal to everything.
    "__eq__": """
class _Any:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    __hash__ = object.__hash__
def ENTRY(*args, **kwargs):
    return _Any()
""",
    # The same as a subclass of int, so that a type check alone does not stop it.
    "__eq__ of an int": """
class _AnyInt(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = int.__hash__
def ENTRY(*args, **kwargs):
    return _AnyInt(-987654321)
""",
    "os._exit in the call": """
import os
def ENTRY(*args, **kwargs):
    os._exit(0)
""",
    "sys.exit in the call": """
import sys
def ENTRY(*args, **kwargs):
    sys.exit(0)
""",
    # Print every marker a harness ever looked for, on stdout and straight to fd 1.
    "printing": """
import os
def ENTRY(*args, **kwargs):
    for line in ("PASSED", "passed", "pass", MARKERS):
        print(line, flush=True)
        os.write(1, (line + "\\n").encode())
    return float("nan")
""".replace("MARKERS", ", ".join(repr("RESULT 0 " + v) for v in VERDICTS)),
    # Patch what the harness reports with (json.dumps) and the builtins it compares with.
    "builtins": """
import builtins, json
_dumps = json.dumps
def _forged(obj, *args, **kwargs):
    if isinstance(obj, dict) and "status" in obj:
        passed = "passed" if obj["status"] not in ("pass", "fail", "timeout") else "pass"
        obj = {**obj, "status": passed, "failure": None}
    return _dumps(obj, *args, **kwargs)
def ENTRY(*args, **kwargs):
    json.dumps = _forged
    builtins.isinstance = lambda *a: True
    builtins.all = lambda *a: True
    builtins.len = lambda *a: 0
    return float("nan")
""",
    # Make the test's assert helpers (unittest's, numpy's tolerance check) accept anything.
    "assert helpers": """
import unittest
def ENTRY(*args, **kwargs):
    for name in dir(unittest.TestCase):
        if name.startswith("assert") or name == "fail":
            setattr(unittest.TestCase, name, lambda *a, **k: None)
    try:
        import numpy
        numpy.allclose = lambda *a, **k: True
    except ImportError:
        pass
    return float("nan")
""",
    # Replace the runner's own report function (or, inside today's child, its encoder).
    "patched runner": """
import sys
def ENTRY(*args, **kwargs):
    frame = sys._getframe(1)
    while frame is not None:
        scope = frame.f_globals
        report = scope.get("report")
        if callable(report):
            scope["report"] = lambda *a, **k: report("passed" if "NONCE" in scope and "job" not in scope else "pass")
        if callable(scope.get("encode")):
            scope["encode"] = lambda value: "true"
        frame = frame.f_back
    return float("nan")
""",
    # Read the job's files (where evalplus's expected outputs travelled) or the answer key.
    "answer files": """
import glob, json, pickle
def ENTRY(*args, **kwargs):
    for path in glob.glob("/tmp/work/*/*") + glob.glob("work/*"):
        try:
            with open(path, "rb") as f:
                job = pickle.load(f) if path.endswith(".pkl") else json.load(f)
        except Exception:
            continue
        if isinstance(job, dict) and "expected" in job:
            for inp, exp in zip(job["inputs"], job["expected"]):
                if list(inp) == list(args):
                    return exp
    return float("nan")
""",
}
# Only where module-level code of the reply runs as it is (the code and dimensions suites).
AT_IMPORT = {
    "sys.exit at import": "import sys\nsys.exit(0)\n",
    "os._exit at import": "import os\nos._exit(0)\n",
}


def forged(entry_point: str, at_import: bool = False) -> dict[str, str]:
    out = {name: code.replace("ENTRY", entry_point) for name, code in FORGERIES.items()}
    if at_import:
        out.update({name: code + FORGERIES["frames"].replace("ENTRY", entry_point)
                    for name, code in AT_IMPORT.items()})
    return out
