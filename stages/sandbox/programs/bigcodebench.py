"""BigCodeBench's harness (stages/suites/bigcodebench.py): runs work/job.json's solution with
its task's tests in one module, by unittest, and reports the outcome next to the nonce that
programs/prelude.py read (what guards that report: the comment above INTROSPECTION there).
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import time
import types
import unittest

job = json.load(open("work/job.json", encoding="utf-8"))
# What bigcodebench's reliability_guard sets before a task runs.
os.environ.update(TZ="UTC", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3",
                  TF_ENABLE_ONEDNN_OPTS="0", MPLBACKEND="Agg")
time.tzset()
os.chdir(tempfile.mkdtemp())


def report(status, failure=None, detail="", ran=()):
    print("RESULT " + NONCE + " " + json.dumps({"status": status, "failure": failure,  # noqa: F821
                                                "detail": detail[-2000:], "ran": list(ran)}),
          flush=True)
    os._exit(0)


try:
    compiled = compile(job["code"] + "\n" + job["test"], "__test__.py", "exec")
except (SyntaxError, ValueError) as err:
    report("fail", "syntax_error", repr(err))
module = types.ModuleType("__test__")
module.__dict__.update({"__file__": "__test__.py", "__package__": None})
sys.modules["__test__"] = module


class Result(unittest.TestResult):
    kinds = []
    ran = []

    def startTest(self, test):
        super().startTest(test)
        self.ran.append(test.id().split(".")[-1])

    def addError(self, test, err):
        super().addError(test, err)
        self.kinds.append(err[0].__name__)


sink = io.StringIO()
try:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        exec(compiled, module.__dict__)
        cases = unittest.TestLoader().loadTestsFromTestCase(module.__dict__["TestCases"])
        result = Result()
        cases.run(result)
except BaseException as err:
    report("fail", "runtime_error:" + type(err).__name__, repr(err))
if result.errors:
    test, trace = result.errors[0]
    report("fail", "runtime_error:" + result.kinds[0],
           "; ".join(t.id().split(".")[-1] for t, _ in result.errors + result.failures) + "\n" + trace)
if result.failures:
    report("fail", "wrong_answer",
           "; ".join(t.id().split(".")[-1] for t, _ in result.failures) + "\n" + result.failures[0][1])
if result.testsRun == 0:
    report("fail", "wrong_answer", "no test ran")
report("pass", ran=result.ran)
