"""These tests run once per Keras backend, each in its own process (see tests/keras_core_suite.py);
KERAS_BACKEND is fixed before Keras is imported.

With CUSTOMFIT_TEST_DEVICES=N (N > 1) the process makes N CPU devices the framework's own way
before it starts (XLA's host device count on jax, logical CPUs on tensorflow) and runs the
distribution tests, test_distributed.py, which the one-device run leaves out."""

import os
import sys
from pathlib import Path

# tests/ (for kernel_caps), after this suite's own modules
sys.path.append(str(Path(__file__).resolve().parent.parent))

DEVICES = int(os.environ.get("CUSTOMFIT_TEST_DEVICES", "1"))
if DEVICES > 1:
    if os.environ.get("KERAS_BACKEND") == "jax":
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
        ).strip()
    elif os.environ.get("KERAS_BACKEND") == "tensorflow":
        import tensorflow as tf

        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * DEVICES,
        )
    collect_ignore = []
else:
    collect_ignore = ["test_distributed.py"]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
assert BACKEND == os.environ.get("KERAS_BACKEND"), (BACKEND, os.environ.get("KERAS_BACKEND"))


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
