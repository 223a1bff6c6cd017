"""Running untrusted Python (model-written code, injected defects) in a bubblewrap sandbox.

execute.py  the sandbox, run_tests / run_program, and SandboxPool (warm sandboxes; `map`
            fans a batch of samples out over them)
plain.py    the tagged JSON in which a sample's values cross the boundary
programs/   what runs inside, as real files read as text: the warm server, the child that
            answers calls, the limits and the user, BigCodeBench's harness
"""
