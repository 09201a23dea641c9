"""A cf.Model trains under each backend's own data parallelism (run with
CUSTOMFIT_TEST_DEVICES=2, see conftest.py): tf.distribute.MirroredStrategy on tensorflow,
keras.distribution.DataParallel on jax. Two replicas with the global batch split between them
end where one device with the whole batch ends, from the same weights and data order."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, DEVICES
from models import Parts
from training import TARGETS, X, assert_same_state, fit, make

# Summing two half-batch gradients instead of one whole-batch gradient changes float rounding
# only; after 2 epochs (12 steps) the weights agree to this:
ATOL = 2e-5


def twice(kind, scope):
    """The same model trained on one device and under `scope`, from the same initial weights."""
    keras.utils.set_random_seed(1)
    single, data = make(kind)
    one = fit(single, data, epochs=2).history
    with scope:
        keras.utils.set_random_seed(1)
        replicated, _ = make(kind)
        many = fit(replicated, data, epochs=2).history
    return single, replicated, one, many


def assert_same_training(single, replicated, one, many):
    assert_same_state(single, replicated, atol=ATOL)
    assert list(one) == list(many)
    for key in one:
        np.testing.assert_allclose(many[key], one[key], rtol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def strategy():
    # One per process, as a program has: the runtime keeps collective ops' keys across
    # strategies, and a second MirroredStrategy's collectives collide with the first's.
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == DEVICES == 2
    return tf.distribute.MirroredStrategy(devices)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is the tensorflow backend's")
@pytest.mark.parametrize("kind", ["one", "two"])
def test_mirrored_strategy_trains_like_one_device(kind, strategy):
    single, replicated, one, many = twice(kind, strategy.scope())
    assert replicated.distribute_strategy is strategy
    # Every weight and optimizer slot is mirrored on both devices.
    for v in replicated.weights + replicated.optimizer.variables:
        assert len(strategy.experimental_local_results(v.value)) == 2, v.path
    assert_same_training(single, replicated, one, many)


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on the jax backend")
@pytest.mark.parametrize("kind", ["one", "two"])
def test_data_parallel_trains_like_one_device(kind):
    import jax

    devices = jax.devices()
    assert len(devices) == DEVICES == 2
    distribution = keras.distribution.DataParallel(devices=devices)
    single, replicated, one, many = twice(kind, distribution.scope())
    # Every weight is replicated on both devices.
    for v in replicated.weights:
        assert v.value.sharding.device_set == set(devices), v.path
    assert_same_training(single, replicated, one, many)


def mixed_float16_on_replicas(scope):
    """A group of two loss-scaled optimizers trained under `scope` and mixed_float16: each
    optimizer's halvings of its scale, and the skipped steps fit() logged for its update."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        with scope:
            keras.utils.set_random_seed(1)
            model = Parts(factor_a=30.0)
            model.compile(
                optimizer={"a": keras.optimizers.SGD(3e-3), "b": keras.optimizers.SGD(3e-2)}
            )
            history = model.fit(
                X, TARGETS, batch_size=8, epochs=2, shuffle=False, verbose=0
            ).history
    finally:
        keras.config.set_dtype_policy("float32")
    halvings = {
        key: round(np.log2(2.0**15 / float(keras.ops.convert_to_numpy(o.dynamic_scale.value))))
        for key, o in model.optimizer.members.items()
    }
    logged = {key: sum(history[f"{key}_skipped_steps"]) for key in halvings}
    return halvings, logged, history


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is the tensorflow backend's")
def test_mirrored_strategy_counts_each_skipped_step_once(strategy):
    # The replicas share one decision (one replica's gradients decide, as in Keras's
    # LossScaleOptimizer), and each skipped step is counted once, not once per replica.
    halvings, logged, history = mixed_float16_on_replicas(strategy.scope())
    assert halvings["a"] >= 3 and logged == halvings, (halvings, history)
    assert history["a_loss"][-1] < history["a_loss"][0]


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on the jax backend")
def test_data_parallel_counts_each_skipped_step_once():
    import jax

    distribution = keras.distribution.DataParallel(devices=jax.devices())
    halvings, logged, history = mixed_float16_on_replicas(distribution.scope())
    assert halvings["a"] >= 3 and logged == halvings, (halvings, history)
    assert history["a_loss"][-1] < history["a_loss"][0]
