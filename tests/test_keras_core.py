"""Runs tests/keras_core once per Keras backend, each in a process of its own (a Keras backend
is fixed per process), and its distribution tests once more on two CPU devices for the backends
that have a data-parallel engine of their own. A failure shows the inner pytest's report."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def run_suite(backend, *paths, **env):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        CUSTOMFIT_BACKEND_SUITE="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        **env,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            "-W",
            "ignore::DeprecationWarning",
            *[str(p) for p in paths],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"{backend}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_keras_core_on(backend):
    run_suite(backend, HERE / "keras_core")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras_core_on_two_devices(backend):
    # tf.distribute.MirroredStrategy over 2 logical CPUs; keras.distribution.DataParallel over
    # 2 XLA host devices.
    out = run_suite(
        backend, HERE / "keras_core" / "test_distributed.py", CUSTOMFIT_TEST_DEVICES="2"
    )
    assert "3 passed, 3 skipped" in out, out[-2000:]
