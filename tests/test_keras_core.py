"""Runs tests/keras_core once per Keras backend, each in a process of its own (a Keras backend
is fixed per process). A failure shows the inner pytest's report."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_keras_core_on(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, CUSTOMFIT_BACKEND_SUITE="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "-W", "ignore::DeprecationWarning", str(HERE / "keras_core")],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, f"{backend}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
