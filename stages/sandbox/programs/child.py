"""The program of the child that runs a sample (inside the sandbox, as `nobody`): it defines
the sample's code, then answers calls of its functions with their return values, one at a
time, until the judge stops asking.

It is sent as text after stages/sandbox/plain.py (whose `encode` and `decode` it uses) and run
by the warm sandbox's server in a forked child (stages/sandbox/execute.py, CHILD_PROGRAM). It holds no nonce, no
expected value and no verdict: it sees only the arguments of each call, and everything it
writes is read by the judge as a claim about a value, decoded strictly, so a sample that takes
it over can only ever claim values. Reads and writes are length-prefixed JSON on two pipes.

Job keys: code (the sample), evalplus (run it as evalplus's unsafe_execute does: under its
reliability_guard with the memory limit given, every call inside swallow_io and time_limit).
"""

# encode and decode are defined by stages/sandbox/plain.py, read_exact and write_all by
# programs/wire.py, whose texts come first:
# ruff: noqa: F821
import json
import struct
import time

FLUSH_S = 0.02


def read_message(fd):
    return json.loads(read_exact(fd, struct.unpack(">I", read_exact(fd, 4))[0]))


def write_message(fd, message):
    data = json.dumps(message).encode()
    write_all(fd, struct.pack(">I", len(data)) + data)


def error_kind(err, timeout_type):
    if timeout_type is not None and isinstance(err, timeout_type):
        return "timeout"
    return "runtime_error:" + type(err).__name__


def describe(env):
    """What the sample defined: callables by name, plain values with their value, stdlib
    modules by name (so a test can use `math` that the sample imported)."""
    out = {}
    for name, value in list(env.items()):
        if name.startswith("__"):
            continue
        if type(value).__name__ == "module":
            out[name] = {"module": getattr(value, "__name__", "")}
        elif callable(value):
            out[name] = {"call": True}
        else:
            try:
                out[name] = {"value": encode(value)}
            except Exception:
                pass  # neither callable nor plain: the judge cannot use it
    return out


def serve(job, rfd, wfd):
    import contextlib

    quiet, limit, timeout_type = contextlib.nullcontext, None, None
    if job.get("evalplus"):
        from evalplus.eval.utils import (
            TimeoutException,
            reliability_guard,
            swallow_io,
            time_limit,
        )

        quiet, limit, timeout_type = swallow_io, time_limit, TimeoutException
        reliability_guard(maximum_memory_bytes=job["memory_bytes"])
    env = {"__name__": "__solution__"}
    try:
        compiled = compile(job["code"], "solution.py", "exec")
        with quiet():
            exec(compiled, env)
    except BaseException as err:
        write_message(wfd, {"error": error_kind(err, timeout_type)})
        return
    write_message(wfd, {"defined": describe(env)})
    while True:
        request = read_message(rfd)
        fn = env.get(request["call"])
        # Answers go in batches (every FLUSH_S, or 1 MB), not one message per call: a long
        # split of small calls costs one round of pipes per batch, and a failing one is
        # still seen within FLUSH_S of its failure.
        batch, size, flushed = [], 0, time.monotonic()
        for args, kwargs, seconds in request["calls"]:
            batch.append(answer(fn, args, kwargs, seconds, quiet, limit, timeout_type))
            size += len(batch[-1].get("value") or "")
            if size > (1 << 20) or time.monotonic() - flushed > FLUSH_S:
                write_message(wfd, {"answers": batch})
                batch, size, flushed = [], 0, time.monotonic()
        if batch:
            write_message(wfd, {"answers": batch})


def answer(fn, args, kwargs, seconds, quiet, limit, timeout_type):
    try:
        args, kwargs = decode(args), decode(kwargs)
        with quiet():
            if limit is not None and seconds is not None:
                with limit(seconds):
                    out = fn(*args, **kwargs)
            else:
                out = fn(*args, **kwargs)
    except BaseException as err:
        return {"error": error_kind(err, timeout_type)}
    try:
        return {"value": encode(out)}
    except BaseException as err:
        return {"not_plain": str(err)[:200]}
