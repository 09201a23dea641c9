"""The keras-* engines seed as keras.utils.set_random_seed seeds (Python's, NumPy's, the Keras
backend's and Keras's own global generator), and on the jax and torch backends without importing
TensorFlow (customfit/trainers/keras_trainer.py's set_random_seed). Each backend in a process of
its own, forked from a warm one that has not imported TensorFlow (tests/warm.py)."""

import json
import os
from pathlib import Path

import pytest
import warm

ROOT = Path(__file__).resolve().parents[1]

DRAWS = """
import json, random, sys
import keras
import numpy as np
from customfit.trainers.keras_trainer import set_random_seed


def draws():
    drawn = [random.random(), float(np.random.rand())]
    drawn += keras.ops.convert_to_numpy(keras.random.normal((2,))).tolist()
    if keras.backend.backend() == "torch":
        import torch

        drawn += torch.rand(2).tolist()
    return drawn


set_random_seed(7)
ours, tensorflow_imported = draws(), "tensorflow" in sys.modules
keras.utils.set_random_seed(7)
print(json.dumps({"ours": ours, "keras": draws(), "tensorflow_imported": tensorflow_imported}))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_seeding_draws_what_keras_seeding_draws_without_tensorflow(backend):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = warm.run(["-c", DRAWS], backend=backend, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["ours"] == seen["keras"]
    assert len(seen["ours"]) == (6 if backend == "torch" else 4)
    assert not seen["tensorflow_imported"]
