"""tests/keras_core on the torch backend, in a process of its own (tests/keras_core_suite.py)."""

from keras_core_suite import on_one_device


def test_keras_core_on_torch():
    on_one_device("torch")
