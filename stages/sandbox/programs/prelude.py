"""In front of every program of its own (stages/sandbox/execute.py, run_program), after
programs/confine.py: read the per-run nonce, then (as root) become `nobody`. The host puts
DROP_PRIVILEGES in front.
"""

import sys

NONCE = sys.stdin.readline().strip()
sys.stdin.close()
if DROP_PRIVILEGES:  # noqa: F821
    drop_privileges()  # noqa: F821
