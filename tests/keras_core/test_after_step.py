"""after_step(): an update that is not a gradient step (an EMA copy of the weights), written
once in the model and run inside the compiled step after the optimizer's, on every backend."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops as K

import customfit as cf

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 3)).astype("float32")
Y = RNG.normal(size=(96, 2)).astype("float32")
DECAY = 0.9


class Averaged(cf.Model):
    def __init__(self):
        super().__init__()
        self.network = keras.layers.Dense(2)
        self.average = keras.layers.Dense(2)
        self.average.trainable = False
        self.steps = keras.Variable(0, dtype="int32", trainable=False, name="steps")

    def build(self, input_shape=None):
        self.network.build((None, 3))
        self.average.build((None, 3))
        for a, w in zip(self.average.weights, self.network.weights):
            a.assign(K.copy(w))  # its own buffer: JAX donates each variable's once

    def call(self, x):
        return self.average(x)

    def objective(self, data, training=True):
        x, y = data
        return K.mean((self.network(x) - y) ** 2)

    def after_step(self):
        for weight, average in zip(self.network.weights, self.average.weights):
            average.assign(DECAY * average + (1 - DECAY) * weight)
        self.steps.assign_add(1)


@pytest.mark.parametrize("jit_compile", [True, False], ids=["compiled", "eager"])
def test_an_ema_in_after_step_follows_every_optimizer_step(jit_compile):
    model = Averaged()
    model.build()
    start = [to_numpy(w).copy() for w in model.network.weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    # Batch by batch (train_on_batch), to read the weights after each step: JAX's fit() keeps
    # them inside its compiled state until the epoch ends.
    after_each = []
    for _ in range(2):
        for i in range(0, len(X), 16):
            model.train_on_batch(X[i : i + 16], Y[i : i + 16])
            after_each.append([to_numpy(w).copy() for w in model.network.weights])
    expected = start
    for after in after_each:  # the weights after each optimizer step
        expected = [DECAY * e + (1 - DECAY) * w for e, w in zip(expected, after)]
    got = [to_numpy(w) for w in model.average.weights]
    assert int(to_numpy(model.steps)) == 12
    assert max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected)) < 1e-6
    # The average moved, and lags the network: it is not a copy of it.
    assert max(float(np.max(np.abs(g - s))) for g, s in zip(got, start)) > 1e-2
    assert max(float(np.max(np.abs(g - w))) for g, w in zip(got, after_each[-1])) > 1e-3
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)  # fit() runs it once a step
    assert int(to_numpy(model.steps)) == 18
    model.evaluate(X, Y, verbose=0)  # evaluate() runs none
    assert int(to_numpy(model.steps)) == 18
