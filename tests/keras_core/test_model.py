"""cf.Model trained through compile()/fit()/evaluate() on this process's backend."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from keras import ops as K
from models import Critic, FrozenMiddle, LinearScore, Stateful, ToyClassifier, TwoParts, ring

import customfit as cf
from customfit.data import toy_split


def weights(layer):
    return [np.array(to_numpy(v.value)) for v in layer.variables]


@pytest.fixture(scope="module")
def toy():
    return toy_split()


def test_toy_classifier_reaches_099_held_out_compiled(toy):
    model = ToyClassifier()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    # Held-out batches of 100 divide the 600 test points: each step compiles for one shape
    # (Keras's default of 32 leaves a last batch of 24, a second program on every backend).
    history = model.fit(
        toy.x_train,
        toy.y_train,
        batch_size=10,
        epochs=8,
        verbose=0,
        validation_data=(toy.x_test, toy.y_test),
        validation_batch_size=100,
    )
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(toy.x_test, toy.y_test, batch_size=100, return_dict=True, verbose=0)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] >= 0.99, result
    # evaluate() runs the same objective: its accuracy is the accuracy of predict().
    predicted = np.argmax(model.predict(toy.x_test, batch_size=100, verbose=0), axis=1)
    assert result["accuracy"] == pytest.approx(np.mean(predicted == toy.y_test), abs=1e-6)


def test_reported_loss_equals_keras_crossentropy_on_same_batch(toy):
    model = ToyClassifier()
    model.compile(optimizer="adam")
    model.fit(toy.x_train[:200], toy.y_train[:200], batch_size=20, epochs=1, verbose=0)
    x, y = toy.x_test[:64], toy.y_test[:64]
    reported = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)["loss"]
    logits = model.predict(x, batch_size=64, verbose=0)
    expected = float(
        to_numpy(K.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))
    )
    assert reported == pytest.approx(expected, rel=1e-5)


def test_not_compiled_step_and_callbacks(toy):
    seen = []

    class Seen(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(sorted(logs))

    model = ToyClassifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = model.fit(
        toy.x_train[:300], toy.y_train[:300], batch_size=50, epochs=2, verbose=0, callbacks=[Seen()]
    )
    assert len(seen) == 12 and seen[0] == ["accuracy", "loss"]
    assert len(history.history["loss"]) == 2
    assert int(to_numpy(model.optimizer.iterations)) == 12


def test_gradient_penalty_critic_trains_compiled():
    real = ring(1024)
    model = Critic()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    if BACKEND == "torch":
        with pytest.warns(UserWarning, match="torch.compile cannot differentiate twice"):
            history = model.fit(real, batch_size=64, epochs=25, verbose=0)
    else:
        history = model.fit(real, batch_size=64, epochs=25, verbose=0)
    first, last = history.history["gap"][0], history.history["gap"][-1]
    # The critic learns to tell the ring from the blob: with slope 1 the gap can reach the
    # Wasserstein-1 distance between them, about 1.6 ...
    assert last > first + 1.0 and last > 1.2, history.history["gap"]
    # ... while the penalty, differentiated through the input gradient, holds its slope near 1.
    assert 0.7 < history.history["slope"][-1] < 1.3, history.history["slope"]


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_score_matching_with_divergence_trains_compiled(method):
    x = (0.5 * np.random.default_rng(4).normal(size=(2048, 2))).astype("float32")
    model = LinearScore(method)
    model.compile(optimizer=keras.optimizers.Adam(5e-2), jit_compile=True)
    model.fit(x, batch_size=128, epochs=30, verbose=0)
    kernel = to_numpy(model.s.kernel.value)
    np.testing.assert_allclose(kernel, -4.0 * np.eye(2), atol=0.6)


@pytest.mark.parametrize("still", ["a", "b"])
def test_each_update_changes_only_its_own_submodel(still):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True)).astype("float32")
    model = TwoParts(repeat_a=3)
    rates = {"a": 1e-2, "b": 1e-2, still: 0.0}
    model.compile(
        optimizer={name: keras.optimizers.SGD(rate) for name, rate in rates.items()},
        jit_compile=True,
    )
    model(x[:1]) if False else None
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # builds everything
    before = {"a": weights(model.a), "b": weights(model.b)}
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    after = {"a": weights(model.a), "b": weights(model.b)}
    moving = "b" if still == "a" else "a"
    # The still part's objective-side gradients are non-zero (both objectives use both parts),
    # so only the update's restriction to its own sub-model keeps it bit-for-bit the same.
    for w0, w1 in zip(before[still], after[still]):
        np.testing.assert_array_equal(w0, w1)
    assert max(np.abs(w0 - w1).max() for w0, w1 in zip(before[moving], after[moving])) > 1e-4
    assert set(history.history) == {"a_loss", "b_loss", "a_err", "b_err"}
    members = model.optimizer.members
    assert int(to_numpy(members["a"].iterations)) == 3 * int(to_numpy(members["b"].iterations))
    assert int(to_numpy(model.optimizer.iterations)) == 17  # one per batch: 1 + 2 * 8


def test_frozen_submodel_is_bit_for_bit_unchanged_through_fit():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(256, 3)) + 2.0).astype("float32")
    y = x[:, :1] ** 2
    model = FrozenMiddle()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    mid0, pre0, head0 = weights(model.mid), weights(model.pre), weights(model.head)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    for w0, w1 in zip(mid0, weights(model.mid)):  # kernels, biases, BN gamma/beta/mean/variance
        np.testing.assert_array_equal(w0, w1)
    assert len(mid0) == 6
    # Gradients flowed through the frozen block to the layer before it.
    assert max(np.abs(a - b).max() for a, b in zip(pre0, weights(model.pre))) > 1e-4
    assert max(np.abs(a - b).max() for a, b in zip(head0, weights(model.head))) > 1e-4


def test_state_inside_objective_batchnorm_dropout_seedgenerator():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(512, 2)) + 3.0).astype("float32")
    y = x[:, :1]
    model = Stateful()
    model.compile(optimizer="adam", jit_compile=True)
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)
    seed0 = to_numpy(model.noise.state.value).copy()
    drop_seed0 = to_numpy(model.drop.seed_generator.state.value).copy()
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    # 48 batches at momentum 0.9: the moving mean has come from 0 to the data's mean of 3.
    np.testing.assert_allclose(to_numpy(model.norm.moving_mean.value), [3.0, 3.0], atol=0.2)
    assert not np.array_equal(seed0, to_numpy(model.noise.state.value))
    if BACKEND != "torch":  # Keras's torch dropout draws from torch's own generator instead
        assert not np.array_equal(drop_seed0, to_numpy(model.drop.seed_generator.state.value))
    # evaluate() uses training=False: no dropout, moving statistics, and no state change.
    mean_before = to_numpy(model.norm.moving_mean.value).copy()
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    np.testing.assert_array_equal(mean_before, to_numpy(model.norm.moving_mean.value))
    assert np.isfinite(first)


class NoLoss(cf.Model):
    def __init__(self):
        super().__init__()
        self.d = keras.layers.Dense(1)

    def objective(self, data, training=True):
        x, y = data
        return {"mse": K.mean((self.d(x) - y) ** 2)}


class VectorLoss(NoLoss):
    def objective(self, data, training=True):
        x, y = data
        return (self.d(x) - y) ** 2


class UnknownOptimizer(TwoParts):
    def updates(self):
        return [cf.Update("a", self.objective_a, self.a), cf.Update("c", self.objective_b, self.b)]


class ForeignSubmodel(TwoParts):
    def __init__(self):
        super().__init__()
        self.__dict__["stranger"] = keras.Sequential([keras.layers.Dense(1)], name="stranger")

    def updates(self):
        return [cf.Update("a", self.objective_a, self.stranger)]


XY = (np.ones((8, 3), "float32"), np.ones((8, 1), "float32"))


def test_error_objective_without_loss():
    model = NoLoss()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"a dict holding 'loss'; got a dict with keys \['mse'\]"):
        model.fit(*XY, verbose=0)


def test_error_non_scalar_loss():
    model = VectorLoss()
    model.compile(optimizer="sgd")
    with pytest.raises(
        ValueError, match=r"loss must be a scalar \(shape \(\)\); got shape \(8, 1\)"
    ):
        model.fit(*XY, batch_size=8, verbose=0)


def test_error_update_names_unknown_optimizer():
    model = UnknownOptimizer()
    model.compile(optimizer={"a": "sgd", "b": "sgd"})
    with pytest.raises(
        ValueError, match=r"updates\(\) names optimizer 'c', but compile\(\) got 'a', 'b'"
    ):
        model.fit(*XY, verbose=0)


def test_error_update_submodel_not_part_of_model():
    model = ForeignSubmodel()
    model.compile(optimizer={"a": "sgd"})
    with pytest.raises(ValueError, match=r"Update 'a': its sub-model 'stranger' is not part of"):
        model.fit(*XY, verbose=0)


def test_error_compile_with_loss():
    with pytest.raises(
        ValueError, match="compile\\(\\) takes an optimizer, not loss= or metrics=; got loss='mse'"
    ):
        ToyClassifier().compile(optimizer="adam", loss="mse")


@pytest.mark.skipif(
    BACKEND != "torch",
    reason="the in-place tracker is the torch backend's (elsewhere: keras.metrics.Mean)",
)
def test_the_torch_tracker_sums_as_keras_mean_does():
    import torch

    from customfit.core.backends import torch_step

    fast, stock = torch_step.Mean(name="fast"), keras.metrics.Mean(name="stock")
    assert type(fast).update_state is not keras.metrics.Mean.update_state
    values = [torch.tensor(v) for v in (0.1, 2.5, -1.75, 3.3333)]
    for value, weight in zip(values, (32, 32, 7, 128)):
        fast.update_state(value, sample_weight=weight)  # the in-place path
        stock.update_state(value, sample_weight=weight)
    fast.update_state(torch.tensor([1.0, 2.0]))  # not a scalar: Keras's own update
    stock.update_state(torch.tensor([1.0, 2.0]))
    for a, b in ((fast.total, stock.total), (fast.count, stock.count)):
        assert float(a.value) == float(b.value)
    assert float(fast.result()) == float(stock.result())
    fast.reset_state()
    assert float(fast.result()) == 0.0  # no samples: 0, as divide_no_nan gives


def test_batch_norm_before_a_layer_torch_cannot_trace_on_meta_builds():
    """Keras's torch build traces on the "meta" device, and where a layer refuses (UpSampling2D
    does) traces again on the CPU in the same stateless scope: batch norm's statistics assigned
    in the failed try must not reach the second (keras-io's WGAN-GP generator: "Tensor on device
    cpu is not on the expected device meta!")."""

    class Upsampler(cf.Model):
        def __init__(self):
            super().__init__()
            self.net = keras.Sequential(
                [
                    keras.Input((4, 4, 1)),
                    keras.layers.BatchNormalization(),
                    keras.layers.UpSampling2D(),
                ]
            )

        def objective(self, x, training=True):
            return K.mean(K.square(self.net(x, training=training)))

    x = np.random.default_rng(0).uniform(size=(8, 4, 4, 1)).astype("float32")
    model = Upsampler()
    model.compile(optimizer="adam")
    model.fit(x, batch_size=4, verbose=0)
    moving_mean = to_numpy(model.net.layers[0].moving_mean)
    # Two steps of momentum 0.99 from 0 towards the batches' means (about 0.5).
    assert 0.005 < float(moving_mean[0]) < 0.015
