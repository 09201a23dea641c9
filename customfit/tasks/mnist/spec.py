"""mnist: the lecture's 28x28 CNN on MNIST (exercise 10, the CPU-against-GPU exercise).

MNIST is not shipped and never downloaded here: the run reads Keras's own copy, the file
`keras.datasets.mnist.load_data()` leaves in its cache (~/.keras/datasets/mnist.npz, or under
$KERAS_HOME), or any .npz given with --data in that file's layout: x_train, y_train, x_test,
y_test, uint8 images 28x28 (0-255) and labels 0-9; or, with --data FOLDER, the four IDX files
MNIST's authors distribute (see idx.py).
"""

import functools
import os

import numpy as np

from customfit import validate
from customfit.errors import UsageError
from customfit.tasks.classifier import task as classifier
from customfit.tasks.classifier.architectures import MNIST_LECTURE

# The classifier family's hooks, this task's as they are.
from customfit.tasks.classifier.task import HEADLINE, OPTIONS, judge, produce, write  # noqa: F401
from customfit.tasks.mnist import idx

NAME = "mnist"
FAMILY = "classifier"
SUMMARY = (
    "MNIST 28x28 from Keras's cache or --data FILE.npz; the lecture's CNN (conv 32-64-64, dense 64)"
)
JUDGE = "held-out accuracy on the file's x_test (MNIST: 10000 digits)"
MODELS = {"lecture": MNIST_LECTURE}
# The lecture's fit(X, y, epochs=5) with Keras's defaults: batch 32, Adam at 1e-3.
DEFAULTS = {"epochs": 5, "batch_size": 32, "lr": 1e-3, "seed": 0, "model": "lecture"}
BARS = {"accuracy": 0.98}
INPUT_SHAPE, NUM_CLASSES = (28, 28, 1), 10
build_trainer = functools.partial(classifier.build_trainer, models=MODELS)
bars = classifier.fixed_bars(BARS)

# What keras.datasets.mnist.load_data() checks its download against.
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def keras_cache_path():
    """Where keras.datasets.mnist.load_data() keeps its file (Keras's own rule: $KERAS_HOME, else
    ~/.keras, else /tmp/.keras where the home folder cannot be written)."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(os.path.expanduser(home), "datasets", "mnist.npz")


def default_data():
    """The data a run reads when --data is not given: Keras's cached file, or a UsageError that
    says how to get it."""
    path = keras_cache_path()
    if os.path.isfile(path):
        return path
    raise UsageError.expected(
        "data",
        f"MNIST: Keras's {path} (python -c 'import keras; keras.datasets.mnist.load_data()' "
        "downloads it there), --data FILE.npz with x_train, y_train, x_test, y_test "
        "(uint8 28x28, labels 0-9), or --data FOLDER holding MNIST's four IDX files",
        given="neither",
    )


def read_data(data):
    """A Split from MNIST-layout arrays (an .npz path, a folder of IDX files, a dict or a tuple):
    images 28x28 (a trailing channel axis is accepted), integers 0-255 scaled to [0, 1], or floats
    already there; labels 0-9."""
    folder = isinstance(data, (str, os.PathLike)) and os.path.isdir(data)
    arrays = idx.read_folder(os.fspath(data)) if folder else validate.data_arrays(data)
    split = validate.checked_split(arrays, INPUT_SHAPE, NUM_CLASSES)
    scaled = {
        name: _scaled(name, np.asarray(arrays[name]).dtype, getattr(split, name))
        for name in ("x_train", "x_test")
    }
    return type(split)(
        scaled["x_train"], split.y_train, scaled["x_test"], split.y_test, num_classes=NUM_CLASSES
    )


def _scaled(name, dtype, x):
    if np.issubdtype(dtype, np.integer):
        expected, low, high, scale = (
            f"{name} as pixels 0-255 (uint8, as in Keras's mnist.npz)",
            0,
            255,
            255.0,
        )
    else:
        expected, low, high, scale = f"{name} as integers 0-255 or floats in [0, 1]", 0.0, 1.0, 1.0
    if x.min() < low or x.max() > high:
        raise UsageError.expected(
            "data", expected, given=f"values from {x.min():g} to {x.max():g} ({dtype})"
        )
    return x / np.float32(scale) if scale != 1.0 else x


def load():
    return read_data(default_data())
