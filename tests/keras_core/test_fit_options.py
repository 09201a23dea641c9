"""fit()'s options as a Keras user reaches for them, on a cf.Model with several optimizers (an
OptimizerGroup), each checked against stock Keras: one plain keras.Model per member, with the
member's weights, optimizer, data and options, compared number for number. The two heads'
objectives are independent, so the cf.Model's step must move each head exactly as a plain
model with that head's loss and optimizer moves it."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from keras import ops as K

import customfit as cf

RNG = np.random.default_rng(11)
X = RNG.normal(size=(32, 3)).astype("float32")
Y = np.stack([X @ [1.0, -2.0, 0.5] + 0.3, np.sin(X[:, 0])], axis=1).astype("float32")
WEIGHTS = RNG.uniform(0.2, 2.0, size=(32,)).astype("float32")
BATCH = 8  # 4 batches an epoch
HEADS = ("a", "b")


class Heads(cf.Model):
    """Two linear heads, each fitted to its own column of y by its own optimizer."""

    def __init__(self):
        super().__init__()
        self.a = keras.layers.Dense(1)
        self.b = keras.layers.Dense(1)

    def squared_error(self, head, column, data):
        x, y, *weight = data
        error = K.mean((head(x) - y[:, column : column + 1]) ** 2, axis=-1)
        return K.mean(error * weight[0]) if weight else K.mean(error)

    def objective_a(self, data, training=True):
        return self.squared_error(self.a, 0, data)

    def objective_b(self, data, training=True):
        return self.squared_error(self.b, 1, data)

    def updates(self):
        return [cf.Update("a", self.objective_a, self.a), cf.Update("b", self.objective_b, self.b)]


def make(optimizers, **compile_options):
    """The cf.Model and, per head, a plain keras.Model with its weights and optimizer."""
    model = Heads()
    model.a.build((None, 3))
    model.b.build((None, 3))
    model.compile(
        optimizer={k: keras.optimizers.get(o()) for k, o in optimizers.items()}, **compile_options
    )
    references = {}
    for name in HEADS:
        reference = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        reference.set_weights(getattr(model, name).get_weights())
        # Eager: the same arithmetic, without a compilation per reference (the file stays fast).
        eager = {"run_eagerly": not compile_options}
        reference.compile(optimizer=optimizers[name](), loss="mse", **eager, **compile_options)
        references[name] = reference
    return model, references


def assert_same(model, references, history=None, reference_histories=None):
    for name, reference in references.items():
        for got, want in zip(getattr(model, name).get_weights(), reference.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        if history is None:
            continue
        want = reference_histories[name]
        for key in want:
            ours = key.replace("loss", f"{name}_loss") if "loss" in key else f"{key}_{name}"
            np.testing.assert_allclose(history[ours], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


def fit_both(optimizers, fit_options=(), callbacks=lambda: [], epochs=2, **compile_options):
    model, references = make(optimizers, **compile_options)
    fit_options = dict(fit_options)
    weight = fit_options.pop("sample_weight", None)
    validation = fit_options.pop("validation_data", None)

    def fit(target, columns):
        options = dict(fit_options)
        if weight is not None:
            options["sample_weight"] = weight
        if validation is not None:
            options["validation_data"] = (validation[0], validation[1][:, columns])
        return target.fit(
            X,
            Y[:, columns],
            batch_size=BATCH,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=callbacks(),
            **options,
        ).history

    history = fit(model, [0, 1])
    reference_histories = {n: fit(r, [c]) for c, (n, r) in enumerate(references.items())}
    assert_same(model, references, history, reference_histories)
    return model, history


def sgd(rate=0.1, **options):
    return lambda: keras.optimizers.SGD(rate, **options)


def adam(rate=0.05, **options):
    return lambda: keras.optimizers.Adam(rate, **options)


def decaying(rate):
    return keras.optimizers.schedules.ExponentialDecay(rate, decay_steps=2, decay_rate=0.5)


@pytest.mark.parametrize(
    "a, b",
    [
        (
            lambda: keras.optimizers.SGD(decaying(0.2), gradient_accumulation_steps=2),
            adam(clipnorm=0.1, gradient_accumulation_steps=3),
        ),
        (sgd(clipvalue=0.05), lambda: keras.optimizers.Adam(decaying(0.1), global_clipnorm=0.05)),
    ],
    ids=["accumulation_schedule_clipnorm", "clipvalue_schedule_global_clipnorm"],
)
def test_member_optimizer_options_train_as_stock_keras(a, b):
    fit_both({"a": a, "b": b})


def test_use_ema_leaves_each_members_averages_in_the_model_after_fit():
    model, _ = fit_both(
        {"a": sgd(use_ema=True, ema_momentum=0.5), "b": adam(use_ema=True, ema_momentum=0.9)}
    )
    for name in HEADS:
        member = model.optimizer.members[name]
        averages = [v for v in member.variables if "average" in v.path]
        weights = getattr(model, name).trainable_variables
        assert len(averages) == len(weights) == 2
        for average, weight in zip(averages, weights):
            np.testing.assert_array_equal(to_numpy(weight), to_numpy(average))


def test_sample_weights_and_validation_data_as_stock_keras():
    _, history = fit_both(
        {"a": sgd(), "b": adam()},
        {"sample_weight": WEIGHTS, "validation_data": (X[:16], Y[:16])},
    )
    assert set(history) == {"a_loss", "b_loss", "val_a_loss", "val_b_loss"}


def test_learning_rate_scheduler_sets_every_members_rate():
    def halve(epoch, rate):
        return float(rate * 0.5) if epoch > 0 else float(rate)

    _, history = fit_both(
        {"a": sgd(0.2), "b": adam(0.1)},
        callbacks=lambda: [keras.callbacks.LearningRateScheduler(halve)],
        epochs=3,
    )
    assert history["learning_rate_a"] == pytest.approx([0.2, 0.1, 0.05])
    assert history["learning_rate_b"] == pytest.approx([0.1, 0.05, 0.025])


def test_reduce_lr_on_plateau_reduces_every_members_rate():
    def reduce(monitor):
        # Never an improvement of 100: after epoch 2 (the first is one), every rate halves.
        return keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode="min", factor=0.5, patience=0, min_delta=100.0
        )

    model, references = make({"a": sgd(0.2), "b": adam(0.1)})
    options = dict(batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    # cf.Model logs each member's loss as <name>_loss; one decides for all the members.
    history = model.fit(X, Y, callbacks=[reduce("a_loss")], **options).history
    for column, (name, reference) in enumerate(references.items()):
        want = reference.fit(X, Y[:, [column]], callbacks=[reduce("loss")], **options).history
        assert history[f"learning_rate_{name}"] == pytest.approx(want["learning_rate"])
        np.testing.assert_allclose(history[f"{name}_loss"], want["loss"], rtol=1e-5, atol=1e-6)
    assert history["learning_rate_a"] == pytest.approx([0.2, 0.2, 0.1])
    assert_same(model, references)


@pytest.mark.skipif(BACKEND == "torch", reason="Keras's torch trainer has no steps_per_execution")
def test_steps_per_execution_as_stock_keras():
    fit_both({"a": sgd(), "b": adam()}, steps_per_execution=2)


class Batches(keras.utils.PyDataset):
    def __init__(self, columns):
        super().__init__()
        self.columns = columns

    def __len__(self):
        return len(X) // BATCH

    def __getitem__(self, i):
        part = slice(i * BATCH, (i + 1) * BATCH)
        return X[part], Y[part][:, self.columns]


def generator(columns):
    while True:
        for i in range(len(X) // BATCH):
            part = slice(i * BATCH, (i + 1) * BATCH)
            yield X[part], Y[part][:, columns]


def tf_dataset(columns):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((X, Y[:, columns])).batch(BATCH)


def torch_loader(columns):
    import torch

    data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y[:, columns]))
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)


@pytest.mark.parametrize("source", [Batches, generator, tf_dataset, torch_loader])
def test_inputs_other_than_arrays_train_as_stock_keras(source):
    model, references = make({"a": sgd(), "b": adam()})
    options = dict(epochs=2, shuffle=False, verbose=0)
    if source is generator:
        options["steps_per_epoch"] = len(X) // BATCH
    history = model.fit(source([0, 1]), **options).history
    for column, (name, reference) in enumerate(references.items()):
        want = reference.fit(source([column]), **options).history
        np.testing.assert_allclose(history[f"{name}_loss"], want["loss"], rtol=1e-5, atol=1e-6)
    assert_same(model, references)


class Head(Heads):
    """One head, one optimizer: the default update."""

    def objective(self, data, training=True):
        return self.objective_a(data, training)

    def updates(self):
        return None


@pytest.mark.parametrize("optimizers", ["one", "two"])
def test_train_on_batch_returns_a_dict_as_stock_keras(optimizers):
    model, references = make({"a": sgd(), "b": adam()})
    if optimizers == "one":
        model = Head()
        model.a.build((None, 3))
        model.a.set_weights(references["a"].get_weights())
        model.compile(optimizer=sgd()())
        references = {"a": references["a"]}
    for i in range(2):
        part = slice(i * BATCH, (i + 1) * BATCH)
        logs = model.train_on_batch(X[part], Y[part], return_dict=True)
        assert set(logs) == ({"loss"} if optimizers == "one" else {"a_loss", "b_loss"})
        for column, (name, reference) in enumerate(references.items()):
            want = reference.train_on_batch(X[part], Y[part][:, [column]], return_dict=True)
            got = logs["loss" if optimizers == "one" else f"{name}_loss"]
            assert isinstance(got, float)
            assert got == pytest.approx(want["loss"], rel=1e-5)
    assert_same(model, references)
    assert int(to_numpy(model.optimizer.iterations)) == 2
