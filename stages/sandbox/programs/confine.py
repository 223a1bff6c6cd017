"""The limits and the user of a process that runs a sample, written once for both ways a
sample runs: the warm server's forked child (programs/server.py) and a program of its own
(stages/sandbox/execute.py, run_program: set on the host before bubblewrap starts, and the
user dropped inside by programs/prelude.py).

The host imports this module; inside the sandbox it runs from source text in front of the
program that uses it, so it imports only the standard library and has no `from __future__`.
"""

import os
import resource

FILE_BYTES = 1 << 20
PROCESSES = 64
NOBODY = 65534


def limit(timeout_s, memory_bytes):
    """Address space, CPU time (the whole seconds of `timeout_s`, plus one), file size,
    process count, and no core files."""
    cpu = int(timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))


def drop_privileges():
    """As root (the pipeline run as root), become `nobody`, so that the process limit holds
    and no capability is left; an unprivileged user stays who it is."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
