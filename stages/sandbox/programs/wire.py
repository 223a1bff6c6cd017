"""Length-prefixed frames over pipes, shared by the sandbox's two programs: the warm server
(programs/server.py) and the child that runs a sample (programs/child.py).

Both run inside the sandbox from source text (stages/sandbox/execute.py joins this file in
front of each), so this module imports nothing of the project and only the standard library.
"""

import os


def read_exact(fd, n):
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, min(n - len(data), 1 << 20))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
