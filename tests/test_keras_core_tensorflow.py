"""tests/keras_core on the tensorflow backend, in its own process (tests/keras_core_suite.py)."""

from keras_core_suite import on_one_device, on_two_devices


def test_keras_core_on_tensorflow():
    on_one_device("tensorflow")


def test_keras_core_on_tensorflow_two_devices():
    on_two_devices("tensorflow")
