"""The losses layers add (kernel regularizers, add_loss) count in a cf.Model's training as in a
stock model compiled with compile(loss=...), on every backend: added for the layers an update
trains, or read by the objective itself (`self.losses`), never dropped and never twice."""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import ops as K

import customfit as cf

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3)).astype("float32")
Y = RNG.normal(size=(64, 1)).astype("float32")
FIT = dict(epochs=3, batch_size=16, shuffle=False, verbose=0)


def regularized(strength=1.0):
    return keras.layers.Dense(
        1, kernel_regularizer=keras.regularizers.L2(strength), kernel_initializer="ones"
    )


class Penalized(keras.layers.Layer):
    """keras-io vq_vae's pattern: a layer that adds a loss of its input with add_loss."""

    def call(self, x):
        self.add_loss(0.5 * K.mean(x**2))
        return x


def stock_weights(layers):
    """A stock keras.Model with the same layers, trained by compile(loss="mse")."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), *layers()])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(X, Y, **FIT)
    return [to_numpy(w) for w in model.weights], model


@pytest.fixture(scope="module")
def stock():
    """The stock models' weights (trained once for the module): regularized, without the
    regularizer, with it twice as strong; and the regularized model's evaluate() loss."""
    expected, model = stock_weights(lambda: [regularized()])
    dropped, _ = stock_weights(lambda: [keras.layers.Dense(1, kernel_initializer="ones")])
    doubled, _ = stock_weights(lambda: [regularized(2.0)])
    loss = model.evaluate(X, Y, batch_size=64, return_dict=True, verbose=0)["loss"]
    return {"expected": expected, "dropped": dropped, "doubled": doubled, "loss": loss}


class Regression(cf.Model):
    def __init__(self, layers, reads_losses):
        super().__init__()
        self.net = keras.Sequential(layers())
        self.reads_losses = reads_losses

    def call(self, x):
        return self.net(x)

    def objective(self, data, training=True):
        x, y = data
        loss = K.mean((self(x) - y) ** 2)
        if self.reads_losses:  # as keras-io's custom train_steps write it
            loss = loss + K.sum(self.net.losses)
        return loss


def trained(layers, reads_losses, jit_compile="auto"):
    keras.utils.set_random_seed(1)
    model = Regression(layers, reads_losses)
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit_compile)
    model.fit(X, Y, **FIT)
    return [to_numpy(w) for w in model.net.weights], model


def farthest(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


@pytest.mark.parametrize(
    "reads_losses, jit_compile",
    [(False, True), (True, True), (False, False)],
    ids=["added-compiled", "read-compiled", "added-eager"],
)
def test_a_kernel_regularizer_trains_as_in_a_stock_model(reads_losses, jit_compile, stock):
    got, model = trained(lambda: [regularized()], reads_losses, jit_compile)
    assert farthest(got, stock["expected"]) < 1e-5
    # What would be wrong lands far off: the regularizer dropped, or counted twice.
    assert farthest(got, stock["dropped"]) > 0.1 and farthest(got, stock["doubled"]) > 0.05
    # The logged loss holds the regularizer, as stock Keras's does.
    ours = model.evaluate(X, Y, batch_size=64, return_dict=True, verbose=0)["loss"]
    assert ours == pytest.approx(stock["loss"], rel=1e-5)


@pytest.mark.parametrize("reads_losses", [False, True], ids=["added", "read"])
def test_compare_counts_a_kernel_regularizer_as_the_step_does(reads_losses, stock):
    # customfit compare's numbers (comparison/probe.py), training on and off, hold the
    # regularizer as evaluate() does; with training off they ran in a scope that mapped no
    # weight, and Keras's regularizer got None for the kernel (keras-io's simsiam on compare).
    from customfit.comparison import noise, probe
    from customfit.core.model import build_train_step

    keras.utils.set_random_seed(1)
    model = Regression(lambda: [regularized()], reads_losses)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    data = (K.convert_to_tensor(X), K.convert_to_tensor(Y))
    build_train_step(model, data)
    found = probe.numbers(model, data, noise.Draws(0))
    untrained = float(np.mean((X.sum(axis=1, keepdims=True) - Y) ** 2)) + 3.0  # L2 of ones
    for kind in ("training", "inference"):
        assert float(found[f"loss/{kind}/loss"]) == pytest.approx(untrained, rel=1e-5), kind


@pytest.mark.parametrize("reads_losses", [False, True], ids=["added", "read"])
def test_a_layers_add_loss_trains_as_in_a_stock_model(reads_losses):
    def layers():
        return [keras.layers.Dense(4), Penalized(), keras.layers.Dense(1)]

    expected, _ = stock_weights(layers)
    got, _ = trained(layers, reads_losses)
    assert farthest(got, expected) < 1e-5
    without, _ = stock_weights(lambda: [keras.layers.Dense(4), keras.layers.Dense(1)])
    assert farthest(got, without) > 1e-3


def test_self_losses_inside_an_objective_holds_this_calls_losses():
    seen = []

    class Reads(cf.Model):
        def __init__(self):
            super().__init__()
            self.net = keras.Sequential([keras.layers.Dense(2), Penalized()])

        def objective(self, x, training=True):
            out = self.net(x)
            seen.append(len(self.losses))
            return K.mean(out) + K.sum(self.losses)

    model = Reads()
    model.compile(optimizer="sgd")
    model.fit(X, epochs=1, batch_size=64, verbose=0)
    assert seen and all(n == 1 for n in seen), seen


class TwoRegularized(cf.Model):
    """Each update adds the losses of the layers it trains only."""

    def __init__(self):
        super().__init__()
        self.first = keras.Sequential([keras.layers.Dense(1, kernel_regularizer="l2")])
        self.second = keras.Sequential([keras.layers.Dense(1, kernel_regularizer="l1")])

    def updates(self):
        return [
            cf.Update("first", self.one, self.first),
            cf.Update("second", self.two, self.second),
        ]

    def one(self, data, training=True):
        return K.mean(self.first(data) + self.second(data)) * 0.0

    def two(self, data, training=True):
        return K.mean(self.second(data) + self.first(data)) * 0.0


def test_each_update_adds_the_losses_of_the_layers_it_trains():
    model = TwoRegularized()
    model.compile(optimizer={"first": "sgd", "second": "sgd"})
    logs = model.evaluate(X, batch_size=64, return_dict=True, verbose=0)
    l2 = 0.01 * float(np.sum(to_numpy(model.first.weights[0]) ** 2))
    l1 = 0.01 * float(np.sum(np.abs(to_numpy(model.second.weights[0]))))
    assert logs["first_loss"] == pytest.approx(l2, rel=1e-5)
    assert logs["second_loss"] == pytest.approx(l1, rel=1e-5)
