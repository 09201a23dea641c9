"""The brief runs of example scripts (tests/test_examples.py, tests/test_keras_io_gallery.py):
one tests/workers/example_worker.py per Keras backend, the three side by side (a backend is
fixed per process, and each framework is imported once rather than once per example)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "example_worker.py"
BACKENDS = ("tensorflow", "torch", "jax")


def run_briefly_side_by_side(scripts, folder, env_of, timeout):
    """backend -> {example: the worker's report, "_log": the tail of its output}, each backend's
    worker running `scripts` in `folder` in the environment `env_of(backend)`."""
    running = {}
    for backend in BACKENDS:
        log = open(folder / f"{backend}.log", "w")
        running[backend] = (
            subprocess.Popen(
                [sys.executable, str(WORKER), str(folder / f"{backend}.json"), *scripts],
                cwd=folder,
                env=env_of(backend),
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    reports = {}
    for backend, (proc, log) in running.items():
        proc.wait(timeout=timeout)
        log.close()
        path = folder / f"{backend}.json"
        reports[backend] = json.loads(path.read_text()) if path.exists() else {}
        reports[backend]["_log"] = (folder / f"{backend}.log").read_text()[-3000:]
    return reports


def check_brief_run(reports, name, backend):
    """Assert that `backend`'s worker ran the example `name` and that it passed (its own closing
    assert held)."""
    report = reports[backend].get(name)
    assert report is not None, f"{name} on {backend} did not run:\n{reports[backend]['_log']}"
    assert report["backend"] == backend, f"{name} ran on {report['backend']}, not {backend}"
    assert report["status"] == "passed", (
        f"{name} on {backend}: {report['error']}\n{report['output']}"
    )
