"""tests/keras_core on the jax backend, in a process of its own (tests/keras_core_suite.py)."""

from keras_core_suite import on_one_device, on_two_devices


def test_keras_core_on_jax():
    on_one_device("jax")


def test_keras_core_on_jax_two_devices():
    on_two_devices("jax")
