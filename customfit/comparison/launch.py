"""The parent's side: one worker process per backend (and one for the float64 reference), in a
temporary folder removed at the end; their numbers and speeds come back as NumPy arrays and
dicts. The first backend starts alone and writes the starting weights: only once it has built
the model on the batch do the others start (side by side), so that a factory or a batch the
model refuses costs one framework's start-up. A worker's usage error stops them all and is raised
as it is; any other failure is that side's `error`."""

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
        self.name, self.backend, self.float64 = name, backend, float64
        self.result = os.path.join(folder, name)
        self.request = os.path.join(folder, f"{name}.request.json")
        with open(self.request, "w") as f:
            json.dump({**job, "result": self.result, "steps": 0 if float64 else job["steps"]}, f)
        self.log_path = os.path.join(folder, f"{name}.log")
        self.process = None

    def start(self):
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "customfit.comparison.worker", self.request],
                env=_env(self.backend, self.float64),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    @property
    def ended(self):
        return self.process is not None and self.process.poll() is not None

    def numbers_ready(self):
        return os.path.exists(self.result + ".npz") or self.ended

    def report(self):
        if not os.path.exists(self.result + ".json"):
            return None
        with open(self.result + ".json") as f:
            return json.load(f)

    def outcome(self):
        """{"numbers": {key: array}, "speed": ...}, or {"error": the last line it printed}."""
        report = self.report()
        if not self.ended or self.process.returncode != 0 or report is None:
            lines = []
            if os.path.exists(self.log_path):
                with open(self.log_path) as f:
                    lines = [line.strip() for line in f if line.strip()]
            status = "not run" if self.process is None else f"exit status {self.process.returncode}"
            return {"error": lines[-1] if lines else status}
        with np.load(self.result + ".npz") as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(report["keys"]))]
        return {"numbers": dict(zip(report["keys"], arrays)), "speed": report.get("speed")}

    def stop(self):
        if self.running:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


def run(target, arrays, backends, steps, seed, timeout=1800):
    """({backend: outcome}, the reference's outcome)."""
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
        everyone = [
            *workers,
            Worker(REFERENCE, "jax", folder, {**job, "builds_weights": False}, True),
        ]
        try:
            _supervise(everyone, job, time.monotonic() + timeout)
            return {w.name: w.outcome() for w in workers}, everyone[-1].outcome()
        finally:
            for w in everyone:
                w.stop()


def _supervise(everyone, job, deadline):
    first, others = everyone[0], everyone[1:]
    first.start()
    while time.monotonic() < deadline:
        for w in everyone:
            report = w.report() if w.ended else None
            if report and "usage_error" in report:
                field, _, message = report["usage_error"].partition(": ")
                raise UsageError(message, field=field)
        built = os.path.exists(job["weights"])
        if built and others[0].process is None:
            for w in others:
                w.start()
        if not built and first.ended:
            return  # the first backend failed before the weights: nobody else can start
        if not any(w.running for w in everyone) and built:
            return
        # The timing, once every side has its numbers: nobody computes while a backend is timed.
        if built and all(w.numbers_ready() for w in everyone):
            if not os.path.exists(job["timing_gate"]):
                open(job["timing_gate"], "w").close()
        time.sleep(0.1)
