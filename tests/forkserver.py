"""Runs Python command lines in forked children of one warm process: `customfit ...` for the
fault tests, and any `python -m MODULE ...` or `python SCRIPT ...` for the tests' pool
(tests/warm.py).

A real process is what SIGKILL, SIGINT and a full disk must hit, but starting Python with a
framework costs seconds of CPU, and the suite starts hundreds of processes. This server imports
customfit and one Keras backend's engine modules once (without running any framework op, so that
forking stays safe), then forks a child per command line: the child changes folder, takes the
environment it is given, sends its output to files and runs what `python ARGS...` would run. The
parent answers with the child's exit status (negative: the signal that ended it).

Protocol: one JSON object per line on stdin, one answer per line on stdout.
  {"argv": [...], "cwd": DIR, "env": {...}, "stdout": FILE, "stderr": FILE} -> {"status": N}
      (argv: customfit's command line; env is added to the server's environment)
  {"python": [...], "cwd": DIR, "env": {...}, "stdout": FILE, "stderr": FILE} -> {"status": N}
      (python: what follows `python`; env replaces the server's environment)
  {"quit": true}
"""

import json
import os
import runpy
import subprocess
import sys


def preload(backend):
    """Import every task's engine modules that run on `backend`, and nothing that starts a
    thread pool."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from customfit import cli, registry  # noqa: F401

    for task in registry.TASKS:
        for engine in registry.ENGINES:
            if registry.KERAS_BACKEND[engine] == backend:
                try:
                    registry.trainer_class(task, engine)
                except ImportError:
                    pass  # a task not built for this engine yet


def run_python(args):
    """What `python ARGS...` runs: `-m MODULE ...`, `-c CODE ...` or `SCRIPT ...`, as __main__."""
    if args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    elif args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        runpy.run_path(args[0], run_name="__main__")
    return 0


def child(request):
    os.chdir(request["cwd"])
    if "python" in request:
        os.environ.clear()
    os.environ.update(request.get("env") or {})
    # The server's stdin carries its requests: a child reads nothing from it.
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    from customfit import cli

    try:
        if "python" in request:
            status = run_python(request["python"])
        else:
            sys.argv = ["customfit", *request["argv"]]
            status = cli.main(request["argv"])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


def main():
    preload(sys.argv[1])
    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        answers.write(json.dumps({"status": code}) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- the tests' side


class Server:
    """A forkserver process for one Keras backend, seen from a test."""

    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def __init__(self, backend):
        env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = self.ROOT + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env.pop("KERAS_BACKEND", None)
        env.pop("CUSTOMFIT_FAULTS", None)
        command = [sys.executable, os.path.abspath(__file__), backend]
        self.backend = backend
        # A process group of its own: a timeout ends the server and the child it is waiting for.
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            cwd=self.ROOT,
            start_new_session=True,
        )
        self.count = 0

    def _ask(self, request, timeout):
        import select

        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            import signal

            os.killpg(self.proc.pid, signal.SIGKILL)  # the next request starts a new server
            self.proc.wait()
            tail = ""
            if os.path.exists(request.get("stderr", "")):
                with open(request["stderr"]) as f:
                    tail = f.read()[-2000:]
            raise TimeoutError(f"no answer in {timeout} s to {request}; its stderr: {tail!r}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the forkserver ended (status {self.proc.wait()})")
        return json.loads(line)

    def run(self, argv, cwd, faults=None, timeout=1800):
        """(exit status, stdout, stderr) of `customfit ARGV` run in `cwd`."""
        env = {"CUSTOMFIT_FAULTS": faults or ""}
        return self._answered({"argv": [str(a) for a in argv], "env": env}, cwd, cwd, timeout)

    def python(self, args, cwd, env, logs, timeout):
        """(exit status, stdout, stderr) of `python ARGS...` run in `cwd` with the environment
        `env`; its output goes through files in the folder `logs`."""
        request = {"python": [str(a) for a in args], "env": dict(env)}
        return self._answered(request, cwd, logs, timeout)

    def alive(self):
        return self.proc.poll() is None

    def _answered(self, request, cwd, logs, timeout):
        self.count += 1
        logs = os.path.join(logs, f".forkserver-{os.getpid()}-{id(self)}-{self.count}")
        request = dict(request, cwd=str(cwd), stdout=logs + ".out", stderr=logs + ".err")
        answer = self._ask(request, timeout)
        texts = []
        for suffix in (".out", ".err"):
            with open(logs + suffix) as f:
                texts.append(f.read())
            os.remove(logs + suffix)
        return answer["status"], texts[0], texts[1]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"quit": true}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
