"""Runs tests/keras_core on one Keras backend in a process of its own (a Keras backend is fixed
per process), and its distribution tests once more on two CPU devices for the backends that have
a data-parallel engine of their own. A failure shows the inner pytest's report.

tests/test_keras_core_<backend>.py call it, a file per backend, so that the test workers can run
the three suites side by side (each file goes to one worker).

The one-device suites run serially in a child of a warm server (tests/warm.py), which has Keras
imported already; the two-device ones need a fresh process, since they make their devices
before the framework starts."""

import os
import subprocess
import sys
from pathlib import Path

import warm
from kernel_caps import tensorflow_cannot

HERE = Path(__file__).parent


def run_suite(backend, *paths, fresh=False, **env):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        CUSTOMFIT_BACKEND_SUITE="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        # One thread, as every run of the suite: beside the other test workers, torch's second
        # thread spun more than it helped (Keras's suite on torch took 213 s of CPU, 140 s alone).
        OMP_NUM_THREADS="1",
        **env,
    )
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-x"]
    args += ["-W", "ignore::DeprecationWarning", *[str(p) for p in paths]]
    if fresh:
        proc = subprocess.run(
            [sys.executable, *args], env=env, capture_output=True, text=True, timeout=1200
        )
    else:
        proc = warm.run(args, backend=backend, env=env, timeout=1200)
    assert proc.returncode == 0, f"{backend}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def on_one_device(backend):
    run_suite(backend, HERE / "keras_core")


def on_two_devices(backend):
    # tf.distribute.MirroredStrategy over 2 logical CPUs; keras.distribution.DataParallel over
    # 2 XLA host devices.
    out = run_suite(
        backend,
        HERE / "keras_core" / "test_distributed.py",
        fresh=True,
        CUSTOMFIT_TEST_DEVICES="2",
    )
    # tensorflow's mixed_float16 test skips, saying why, where TensorFlow cannot run float16
    float16 = not (backend == "tensorflow" and tensorflow_cannot("float16"))
    assert ("3 passed, 3 skipped" if float16 else "2 passed, 4 skipped") in out, out[-2000:]
