"""Programs that run inside the sandbox. Each is read as text
(stages.sandbox.execute.program_text) and joined after the files whose names it uses, so they
import only the standard library and none has a `from __future__` line. The host imports only
confine.py (for its limits): the others run when loaded (server.py serves its stdin,
prelude.py reads the nonce from it, bigcodebench.py runs work/job.json), so a check that
imports every module skips this folder.
"""
