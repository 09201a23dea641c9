"""`python ARGS...` for the tests, run in a child forked from a warm process of this test worker.

Starting Python with TensorFlow, torch or JAX costs seconds of CPU before the first line of a
test's run, and the suite starts hundreds of such processes. Each test worker keeps forkservers
(tests/forkserver.py), per Keras backend, that imported the frameworks once; a run is a forked
child of one of them, still a process of its own (a Keras backend is fixed per process), started
in milliseconds. Two runs at once take two servers. The servers end with the test session.

What a server imported stays as it was imported: a run that needs another KERAS_HOME, or a
variable a framework reads at import, starts a fresh process with subprocess instead.
"""

import os
import subprocess
import sys
import tempfile
import threading

from forkserver import Server

_lock = threading.Lock()
_idle = {}  # backend -> [Server]
_started = []


def run(args, *, backend, env=None, cwd=None, timeout=900):
    """Like subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True,
    text=True, timeout=timeout), in a child of a warm server for `backend`."""
    env = dict(os.environ if env is None else env, KERAS_BACKEND=backend)
    server = _checkout(backend)
    with tempfile.TemporaryDirectory(prefix="warm-") as logs:
        try:
            status, out, err = server.python(args, cwd or os.getcwd(), env, logs, timeout)
        except TimeoutError as e:
            raise subprocess.TimeoutExpired([sys.executable, *args], timeout, str(e)) from None
        finally:
            if server.alive():
                with _lock:
                    _idle[backend].append(server)
    return subprocess.CompletedProcess([sys.executable, *map(str, args)], status, out, err)


def _checkout(backend):
    with _lock:
        idle = _idle.setdefault(backend, [])
        while idle:
            server = idle.pop()
            if server.alive():
                return server
        server = Server(backend)
        _started.append(server)
        return server


def close_all():
    with _lock:
        for server in _started:
            server.close()
        _started.clear()
        _idle.clear()
