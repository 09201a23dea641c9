"""`customfit run` in a process of its own, as a user types it (a Keras backend is fixed per
process; a run is forked from a warm one, tests/warm.py): a run, and a run killed with SIGKILL
one step into its 3rd epoch, then resumed."""

import os
import signal
import time

import warm
from history_helpers import read_history_csv

from customfit import checkpoint
from customfit.registry import KERAS_BACKEND

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
    # One thread each: the suites run two of these at a time on two cores.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    return env


def command(task, engine, out, *flags):
    return [
        "-m",
        "customfit",
        "run",
        task,
        "--engine",
        engine,
        "--out",
        out,
        *flags,
    ]


def run(task, engine, out, *flags, timeout=900):
    started = time.perf_counter()
    done = warm.run(
        command(task, engine, out, "--quiet", *flags),
        backend=KERAS_BACKEND[engine],
        cwd=os.path.dirname(out),
        env=env(),
        timeout=timeout,
    )
    return {
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr[-4000:],
        "seconds": time.perf_counter() - started,
    }


def run_until_killed(task, engine, out, epochs, *flags, epoch=3):
    """A run SIGKILLed one step into epoch `epoch` (customfit/faults.py), after the checkpoint,
    history and figures of the epoch before it are written: its return code and the tail of what
    it wrote. Forked from a warm server like every other run, the kill its own process sends."""
    done = warm.run(
        command(task, engine, out, "--epochs", str(epochs), *flags),
        backend=KERAS_BACKEND[engine],
        cwd=os.path.dirname(out),
        env=dict(env(), CUSTOMFIT_FAULTS=f"kill@step:{epoch}.1"),
        timeout=600,
    )
    return {"returncode": done.returncode, "stderr": done.stderr[-2000:]}


def killed_and_resumed(task, engine, folder, epochs, *flags):
    """A run killed one step into its 3rd epoch, what it left, and the same run resumed."""
    out = str(folder / f"killed-{engine}")
    killed = run_until_killed(task, engine, out, epochs, *flags)
    if killed["returncode"] != -signal.SIGKILL:
        return {"killed": killed}
    _, meta = checkpoint.load(os.path.join(out, "checkpoint.safetensors"))
    state = {
        "killed": killed,
        "killed_epoch": meta["epoch"],
        "metrics_before_resume": os.path.exists(os.path.join(out, "metrics.json")),
        "history_rows": len(read_history_csv(os.path.join(out, "history.csv"))),
    }
    state["resumed"] = run(task, engine, out, "--resume")
    return state
