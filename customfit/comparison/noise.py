"""The same random draws on every backend: while a comparison runs, keras.random's draws (and the
Dropout layers', which go through the same backend functions) come from one NumPy generator,
seeded identically in every process and reset before each evaluation. Each backend's own
generator would draw other numbers from the same seed; these are the same numbers everywhere,
in the order the objective asks for them."""

import contextlib

import numpy as np
from keras import ops as K
from keras.src import backend

REPLACED = ("normal", "uniform", "truncated_normal", "randint", "categorical", "shuffle", "dropout")
HOW = (
    f"keras.random's {', '.join(REPLACED)} (Dropout layers too) drawn from "
    "numpy.random.default_rng(SEED), reset before each evaluation: the same numbers, in the same "
    "order, on every backend"
)


class Draws:
    """Backend-neutral stand-ins for the backend's random functions, all fed by one generator."""

    def __init__(self, seed):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self):
        self.rng = np.random.default_rng(self.seed)

    @staticmethod
    def _tensor(values, dtype):
        return K.convert_to_tensor(values, dtype=dtype or backend.floatx())

    def normal(self, shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return self._tensor(self.rng.normal(size=tuple(shape)), dtype) * stddev + mean

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return self._tensor(self.rng.random(size=tuple(shape)), dtype) * (maxval - minval) + minval

    def truncated_normal(self, shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        values = self.rng.normal(size=tuple(shape))
        outside = np.abs(values) > 2.0
        while outside.any():  # Keras's truncation: redrawn beyond two standard deviations
            values[outside] = self.rng.normal(size=int(outside.sum()))
            outside = np.abs(values) > 2.0
        return self._tensor(values, dtype) * stddev + mean

    def randint(self, shape, minval, maxval, dtype="int32", seed=None):
        return K.convert_to_tensor(self.rng.integers(minval, maxval, size=tuple(shape)), dtype)

    def categorical(self, logits, num_samples, dtype="int32", seed=None):
        # The Gumbel-max trick: the logits may be traced; the noise is drawn here.
        batch, classes = K.shape(logits)
        gumbel = self.rng.gumbel(size=(batch, num_samples, classes))
        scores = K.expand_dims(logits, 1) + self._tensor(gumbel, logits.dtype)
        return K.cast(K.argmax(scores, axis=-1), dtype)

    def shuffle(self, x, axis=0, seed=None):
        return K.take(x, self.rng.permutation(K.shape(x)[axis]), axis=axis)

    def dropout(self, inputs, rate, noise_shape=None, seed=None):
        shape = (
            tuple(K.shape(inputs))
            if noise_shape is None
            else tuple(s if n is None else n for s, n in zip(K.shape(inputs), noise_shape))
        )
        keep = self.rng.random(size=shape) >= rate
        kept = self._tensor(keep, inputs.dtype)
        return inputs * kept / (1.0 - rate)


@contextlib.contextmanager
def shared(draws):
    """Within the block, the backend's random functions are `draws`'."""
    module = backend.random
    saved = {name: getattr(module, name) for name in REPLACED}
    for name in REPLACED:
        setattr(module, name, getattr(draws, name))
    try:
        yield draws
    finally:
        for name, function in saved.items():
            setattr(module, name, function)
