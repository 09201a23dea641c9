"""The parent's side: one worker process per backend (and one for the float64 reference), side by
side, in a temporary folder that is removed at the end; their numbers and speeds back as NumPy
arrays and dicts. A worker's usage error (the factory returns no cf.Model, the arrays do not fit)
stops them all and is raised as it is; any other failure is that backend's `error`."""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from customfit.errors import UsageError

REFERENCE = "float64"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(backend, float64):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["CUSTOMFIT_COMPARE_FLOAT64"] = "1" if float64 else "0"
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Worker:
    def __init__(self, name, backend, folder, job, float64=False):
        self.name, self.folder = name, folder
        self.result = os.path.join(folder, name)
        request = os.path.join(folder, f"{name}.request.json")
        with open(request, "w") as f:
            json.dump({**job, "result": self.result, "steps": 0 if float64 else job["steps"]}, f)
        self.log = open(os.path.join(folder, f"{name}.log"), "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "customfit.compare.worker", request],
            env=_env(backend, float64),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def numbers_ready(self):
        return os.path.exists(self.result + ".npz") or self.process.poll() is not None

    def report(self):
        path = self.result + ".json"
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def outcome(self):
        """{"numbers": {key: array}, "speed": ...}, or {"error": the last line it printed}."""
        report = self.report()
        if self.process.returncode != 0 or report is None:
            self.log.flush()
            with open(self.log.name) as f:
                lines = [line.strip() for line in f if line.strip()]
            return {"error": lines[-1] if lines else f"exit status {self.process.returncode}"}
        with np.load(self.result + ".npz") as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(report["keys"]))]
        return {"numbers": dict(zip(report["keys"], arrays)), "speed": report.get("speed")}

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def run(target, arrays, backends, steps, seed, timeout=1800):
    """({backend: outcome}, reference outcome)."""
    with tempfile.TemporaryDirectory(prefix="customfit-compare-") as folder:
        batch = os.path.join(folder, "batch.npz")
        np.savez(batch, **arrays)
        job = {
            "file": target.path,
            "factory": target.factory,
            "batch": batch,
            "seed": seed,
            "weights": os.path.join(folder, "weights.npz"),
            "steps": steps,
            "timing_gate": os.path.join(folder, "timing.gate"),
            "timing_lock": os.path.join(folder, "timing.lock"),
        }
        workers = [
            Worker(b, b, folder, {**job, "builds_weights": i == 0}) for i, b in enumerate(backends)
        ]
        reference = Worker(REFERENCE, "jax", folder, {**job, "builds_weights": False}, True)
        everyone = [*workers, reference]
        try:
            _supervise(workers, everyone, job, timeout)
            return {w.name: w.outcome() for w in workers}, reference.outcome()
        finally:
            for w in everyone:
                w.stop()


def _supervise(workers, everyone, job, timeout):
    deadline = time.monotonic() + timeout
    while True:
        running = [w for w in everyone if w.process.poll() is None]
        for w in everyone:
            report = w.report() if w not in running else None
            if report and "usage_error" in report:
                field, _, message = report["usage_error"].partition(": ")
                raise UsageError(message, field=field)
        if not running or time.monotonic() > deadline:
            return
        if workers[0] not in running and not os.path.exists(job["weights"]):
            return  # the first backend failed before the weights: nobody else can start
        if all(w.numbers_ready() for w in workers) and not os.path.exists(job["timing_gate"]):
            open(job["timing_gate"], "w").close()
        time.sleep(0.1)
