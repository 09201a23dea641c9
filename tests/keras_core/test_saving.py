"""A cf.Model saves and loads like any Keras model: `.keras` files and weights files, with one
optimizer or an OptimizerGroup; the loaded model is compiled, holds the optimizer states, and
trains on to the same numbers as the model that was saved."""

import json
import warnings

import keras
import numpy as np
import pytest
from conftest import to_numpy
from training import CUSTOM, assert_same_state, fit, make, outputs

from customfit.core.model import OptimizerGroup


def load_strictly(load):
    # A warning here means a part of the state was skipped or the model was left uncompiled.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return load()


@pytest.mark.parametrize("kind", ["one", "two"])
def test_keras_file_round_trip_trains_on_equal(kind, tmp_path):
    model, data = make(kind)
    fit(model, data, epochs=2)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = load_strictly(lambda: keras.models.load_model(path, custom_objects=CUSTOM))

    assert loaded.compiled and type(loaded.optimizer) is type(model.optimizer)
    assert_same_state(model, loaded)
    np.testing.assert_array_equal(outputs(loaded, kind), outputs(model, kind))
    steps = int(to_numpy(model.optimizer.iterations))
    assert steps == 12 and int(to_numpy(loaded.optimizer.iterations)) == steps
    if kind == "two":
        members = loaded.optimizer.members
        assert list(members) == ["a", "b"]
        assert [type(m).__name__ for m in members.values()] == ["Adam", "SGD"]
        assert float(to_numpy(members["b"].learning_rate)) == pytest.approx(2e-2)
        assert members["b"].momentum == pytest.approx(0.9)
        assert int(to_numpy(members["a"].iterations)) == 2 * steps  # repeat=2

    # No compile() after loading: the loaded model trains on, from the saved optimizer states,
    # exactly as the saved one does.
    history = fit(loaded, data)
    fit(model, data)
    assert_same_state(model, loaded, atol=1e-6)
    assert np.isfinite(history.history["loss" if kind == "one" else "a_loss"][0])


@pytest.mark.parametrize("kind", ["one", "two"])
def test_weights_file_round_trip_into_a_fitted_model(kind, tmp_path):
    model, data = make(kind)
    fit(model, data, epochs=2)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)

    other, _ = make(kind)
    fit(other, (data[0][:32], data[1][:32]))  # a fitted model: other weights, other slots
    assert not np.allclose(outputs(other, kind), outputs(model, kind))
    load_strictly(lambda: other.load_weights(path))
    assert_same_state(model, other)
    np.testing.assert_array_equal(outputs(other, kind), outputs(model, kind))

    fit(other, data)
    fit(model, data)
    assert_same_state(model, other, atol=1e-6)


def test_optimizer_group_serialises_and_has_no_learning_rate_of_its_own():
    group = OptimizerGroup(
        {
            "gen": keras.optimizers.Adam(1e-3, beta_1=0.5),
            "dis": keras.optimizers.SGD(2e-3, momentum=0.9),
        }
    )
    config = json.loads(json.dumps(keras.optimizers.serialize(group)))
    back = keras.optimizers.deserialize(config)
    assert type(back) is OptimizerGroup
    assert list(back.members) == ["dis", "gen"]  # sorted: a fixed order for the JAX state
    assert [o.name for o in back.optimizers] == ["dis", "gen"]
    assert float(to_numpy(back.members["gen"].learning_rate)) == pytest.approx(1e-3)
    assert back.members["gen"].beta_1 == pytest.approx(0.5)
    assert back.members["dis"].momentum == pytest.approx(0.9)
    with pytest.raises(
        AttributeError, match=r"no learning rate of its own; its members \(dis, gen\)"
    ):
        _ = back.learning_rate
