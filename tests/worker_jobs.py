"""Runs one engine's test worker (tests/workers/*.py) in a process of its own, because Keras's
backend is fixed per process (a child of a warm server, tests/warm.py), and reads back what it wrote: OUT.json as a dict, OUT.npz as
report["arrays"]. A worker that fails is reported, not raised, so one engine's failure names
itself in that engine's test and the other engines still run."""

import json
import os

import numpy as np
import pytest
import warm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_path(name):
    return os.path.join(ROOT, "tests", "workers", f"{name}_worker.py")


def run_worker(worker, job, folder, keras_backend, timeout, one_thread=False):
    """job (a dict with "engine") -> the worker's report, or {"failed": its stderr's tail}."""
    engine = job["engine"]
    tag = engine.replace("@", "-at-")
    job = dict(job, output=str(folder / f"result-{tag}"))
    path = folder / f"job-{tag}.json"
    path.write_text(json.dumps(job))
    env = dict(os.environ, KERAS_BACKEND=keras_backend, TF_CPP_MIN_LOG_LEVEL="2")
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"  # the test workers share the two cores
    done = warm.run([worker, str(path)], backend=keras_backend, env=env, cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        return {"failed": f"worker for {engine} exited {done.returncode}:\n{done.stderr[-4000:]}"}
    with open(job["output"] + ".json") as f:
        report = json.load(f)
    with np.load(job["output"] + ".npz", allow_pickle=False) as saved:
        report["arrays"] = {key: saved[key] for key in saved.files}
    return report


def reports_of(futures):
    """The getter a fixture yields over {engine: a future of run_worker's report}: an engine
    whose worker failed fails its own test, with the worker's stderr."""

    def get(engine):
        report = futures[engine].result()
        if "failed" in report:
            pytest.fail(report["failed"], pytrace=False)
        return report

    return get
