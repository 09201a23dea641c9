"""One `customfit run` in a process of its own, for the benchmark scripts that time whole runs."""

import json
import os
import subprocess
import sys
from pathlib import Path


def metrics_of_run(task, engine, out, *flags):
    """Run `customfit run TASK --engine ENGINE --out OUT --quiet FLAGS...` and return its
    metrics.json. KERAS_BACKEND is dropped so that the engine picks its own backend."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_BACKEND", None)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "customfit",
            "run",
            task,
            "--engine",
            engine,
            "--out",
            str(out),
            "--quiet",
            *map(str, flags),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return json.loads((Path(out) / "metrics.json").read_text())
