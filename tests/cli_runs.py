"""`customfit run` in a process of its own, as a user types it (a Keras backend is fixed per
process; a run is forked from a warm one, tests/warm.py): a run, and a run killed with SIGKILL as its 3rd epoch starts, then resumed."""

import os
import signal
import subprocess
import sys
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


def run_until_killed(task, engine, out, epochs, *flags):
    """Start a run, read its progress bar, and SIGKILL it the moment epoch 3's bar appears: the
    loop draws it right after epoch 2's checkpoint and history are written."""
    proc = subprocess.Popen(
        [sys.executable, *command(task, engine, out, "--epochs", str(epochs), *flags)],
        cwd=os.path.dirname(out),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return kill_on(proc, f"Epoch 3/{epochs}", seconds=600)


def kill_on(proc, marker, seconds):
    """Read a run's progress bars (its stderr) and SIGKILL it the moment `marker` appears;
    its return code and the tail of what it wrote."""
    seen = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            seen = (seen + chunk)[-4096:]
            if marker.encode() in seen:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    return {"returncode": proc.returncode, "stderr": seen[-2000:].decode(errors="replace")}


def killed_and_resumed(task, engine, folder, epochs, *flags):
    """A run killed as its 3rd epoch starts, what it left, and the same run resumed."""
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
