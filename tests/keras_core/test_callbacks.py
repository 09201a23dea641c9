"""Keras's own callbacks work with a cf.Model: they see the objective's named figures, save and
restore its state (optimizer group included), and change its optimizers' learning rates."""

import csv
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy
from event_logs import read_scalars
from training import CUSTOM, assert_same_state, fit, make, outputs


class WeightsEachEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append([np.array(w) for w in self.model.get_weights()])


class StopAfter(keras.callbacks.Callback):
    """Stands for a crash: raises at the end of an epoch."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise RuntimeError(f"stopped after epoch {self.epochs}")


def test_model_checkpoint_writes_a_loadable_keras_file_each_epoch(tmp_path):
    model, data = make("one")
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch-{epoch:02d}.keras"))
    fit(model, data, epochs=3, callbacks=[checkpoint])
    assert sorted(os.listdir(tmp_path)) == ["epoch-01.keras", "epoch-02.keras", "epoch-03.keras"]
    first = keras.models.load_model(tmp_path / "epoch-01.keras", custom_objects=CUSTOM)
    assert int(to_numpy(first.optimizer.iterations)) == 6  # 96 samples, batches of 16
    last = keras.models.load_model(tmp_path / "epoch-03.keras", custom_objects=CUSTOM)
    assert_same_state(model, last)
    np.testing.assert_array_equal(outputs(last, "one"), outputs(model, "one"))


def test_backup_and_restore_resumes_to_the_uninterrupted_result(tmp_path):
    backup = str(tmp_path / "backup")

    def fresh():
        keras.utils.set_random_seed(1)  # the same initial weights for every run below
        return make("two")

    crashed, data = fresh()
    with pytest.raises(RuntimeError, match="stopped after epoch 2"):
        fit(
            crashed,
            data,
            epochs=4,
            callbacks=[keras.callbacks.BackupAndRestore(backup), StopAfter(2)],
        )
    resumed, _ = fresh()
    history = fit(resumed, data, epochs=4, callbacks=[keras.callbacks.BackupAndRestore(backup)])
    uninterrupted, _ = fresh()
    reference = fit(uninterrupted, data, epochs=4)

    assert len(history.history["a_loss"]) == 2  # epochs 3 and 4 only
    # Weights and both optimizers' slots and step counts came back from the backup.
    assert_same_state(uninterrupted, resumed, atol=1e-6)
    np.testing.assert_allclose(
        history.history["b_loss"], reference.history["b_loss"][2:], rtol=1e-5
    )
    assert int(to_numpy(resumed.optimizer.members["a"].iterations)) == 2 * 4 * 6
    assert not os.path.exists(backup)  # a finished run deletes its backup


def test_early_stopping_on_an_objective_metric_restores_the_best_weights():
    model, data = make("one")
    kept = WeightsEachEpoch()
    # No epoch can improve accuracy by 2: the first epoch stays the best, patience runs out.
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", min_delta=2.0, patience=2, restore_best_weights=True
    )
    history = fit(model, data, epochs=20, validation_data=data, callbacks=[kept, stop])
    assert len(history.history["val_accuracy"]) == 3 and stop.stopped_epoch == 2
    for restored, best in zip(model.get_weights(), kept.seen[0]):
        np.testing.assert_array_equal(restored, best)
    assert any(not np.array_equal(a, b) for a, b in zip(kept.seen[0], kept.seen[2]))


@pytest.mark.parametrize("kind", ["one", "two"])
def test_reduce_lr_on_plateau_reduces_every_optimizer_used_by_the_step(kind):
    model, data = make(kind, momentum=0.0)  # with momentum, SGD moves on at a rate of 0
    kept = WeightsEachEpoch()
    # Never an improvement of 10: after epoch 2 every learning rate goes to 0 (factor 0), so
    # epoch 3 must leave every weight as it was, which shows the step uses the new rates.
    # (Keras infers mode="min" for "loss" only; other names need it said, as with any model.)
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="loss" if kind == "one" else "a_loss",
        mode="min",
        factor=0.0,
        patience=1,
        min_delta=10.0,
    )
    history = fit(model, data, epochs=3, callbacks=[kept, reduce]).history
    if kind == "one":
        assert history["learning_rate"] == pytest.approx([1e-2, 1e-2, 0.0])
        rates = [model.optimizer.learning_rate]
    else:
        assert history["learning_rate_a"] == pytest.approx([1e-2, 1e-2, 0.0])
        assert history["learning_rate_b"] == pytest.approx([2e-2, 2e-2, 0.0])
        rates = [m.learning_rate for m in model.optimizer.members.values()]
    assert [float(to_numpy(r)) for r in rates] == [0.0] * len(rates)
    assert any(not np.array_equal(a, b) for a, b in zip(kept.seen[0], kept.seen[1]))
    for a, b in zip(kept.seen[1], kept.seen[2]):
        np.testing.assert_array_equal(a, b)


def test_csv_logger_writes_the_objective_figures(tmp_path):
    model, data = make("one")
    path = tmp_path / "log.csv"
    history = fit(
        model,
        data,
        epochs=2,
        validation_data=data,
        callbacks=[keras.callbacks.CSVLogger(str(path))],
    ).history
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in rows], history[key], rtol=1e-6)


@pytest.mark.parametrize("kind", ["one", "two"])
def test_tensorboard_logs_the_objective_figures_and_learning_rates(kind, tmp_path):
    model, data = make(kind)
    history = fit(
        model,
        data,
        epochs=2,
        validation_data=data,
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path))],
    ).history
    train, validation = (
        read_scalars(str(tmp_path / "train")),
        read_scalars(str(tmp_path / "validation")),
    )
    names = ["loss", "accuracy"] if kind == "one" else ["a_loss", "b_loss", "a_err", "b_err"]
    for name in names:
        assert [step for step, _ in train[f"epoch_{name}"]] == [0, 1]
        np.testing.assert_allclose([v for _, v in train[f"epoch_{name}"]], history[name], rtol=1e-6)
        np.testing.assert_allclose(
            [v for _, v in validation[f"epoch_{name}"]], history[f"val_{name}"], rtol=1e-6
        )
    rates = (
        {"learning_rate": 1e-2}
        if kind == "one"
        else {"learning_rate_a": 1e-2, "learning_rate_b": 2e-2}
    )
    for tag, rate in rates.items():
        assert [v for _, v in train[f"epoch_{tag}"]] == pytest.approx([rate, rate])
