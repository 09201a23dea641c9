"""These tests run once per Keras backend, each in its own process (see tests/test_keras_core.py);
KERAS_BACKEND is fixed before Keras is imported."""

import os

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
assert BACKEND == os.environ.get("KERAS_BACKEND"), (BACKEND, os.environ.get("KERAS_BACKEND"))


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
