"""A cf.Model trains under each backend's own data parallelism (run with
CUSTOMFIT_TEST_DEVICES=2, see conftest.py): tf.distribute.MirroredStrategy on tensorflow,
keras.distribution.DataParallel on jax. Two replicas with the global batch split between them
take the step one device takes with the whole batch, from the same weights."""

import contextlib

import keras
import numpy as np
import pytest
from conftest import BACKEND, DEVICES
from kernel_caps import tensorflow_cannot
from models import Parts
from training import TARGETS, X, fit, make, state

# One step of SGD from the same weights, on one device with the whole batch and on two replicas
# with half of it each: the replicas' averaged gradients differ from the whole batch's by float32
# rounding only. A trajectory of several steps would amplify that rounding wherever a ReLU sits
# near its kink (tests/kernel_settings.md), so the test takes one step, as tests/test_devices.py
# does, with SGD, whose step is linear in the gradient (Adam's is not near a zero gradient).
# Tolerance, array by array: T = 4096 u of the step's size (a sum of K float32 terms rounds to
# about K u of their magnitudes; K = 4096 as in tests/workers/devices_worker.py, generous for a
# batch of 16), plus rounding the weight itself to float32 (2 u |w|).
UNIT_ROUNDOFF = 2.0**-24
T = 4096 * UNIT_ROUNDOFF
BATCH = 16


def one_step(kind, scope=None, lr_scale=1.0):
    """State and logs of `kind`'s model after one step on the first batch, from seed 1's weights."""
    with scope or contextlib.nullcontext():
        keras.utils.set_random_seed(1)
        model, (x, y) = make(kind, sgd_only=True, lr_scale=lr_scale)
        history = fit(model, (x[:BATCH], y[:BATCH])).history
    return model, state(model), history


def misfits(reference, other, step_sizes):
    """Each array's largest difference from the reference, over its tolerance (<= 1 passes), by
    the reference's path (arrays pair up in order: paths hold Keras's instance numbering)."""
    assert [v.shape for _, v in other] == [v.shape for _, v in reference]
    figures = {}
    for (path, ref), (_, value), step in zip(reference, other, step_sizes):
        atol = T * step + 2 * UNIT_ROUNDOFF * float(np.max(np.abs(ref))) + 1e-12
        figures[path] = float(np.max(np.abs(value - ref))) / atol
    return figures


def assert_same_training(kind, scope):
    _, single, one = one_step(kind)
    # Summing the replicas' gradients instead of averaging them doubles the step: the same model
    # at twice the learning rate. Its distance from `single` is the step's size, which sets the
    # tolerance, and it must miss that tolerance by far.
    _, doubled, _ = one_step(kind, lr_scale=2.0)
    step_sizes = [float(np.max(np.abs(d - s))) for (_, d), (_, s) in zip(doubled, single)]
    replicated, spread, many = one_step(kind, scope)
    assert len(single) > 8
    figures = misfits(single, spread, step_sizes)
    worst = max(figures, key=figures.get)
    assert figures[worst] <= 1.0, (worst, figures[worst])
    broken = misfits(single, doubled, step_sizes)
    assert max(broken.values()) > 100, broken
    assert list(one) == list(many)
    for key in one:
        np.testing.assert_allclose(many[key], one[key], rtol=T, err_msg=key)
    return replicated


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
    replicated = assert_same_training(kind, strategy.scope())
    assert replicated.distribute_strategy is strategy
    # Every weight and optimizer slot is mirrored on both devices.
    for v in replicated.weights + replicated.optimizer.variables:
        assert len(strategy.experimental_local_results(v.value)) == 2, v.path


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on the jax backend")
@pytest.mark.parametrize("kind", ["one", "two"])
def test_data_parallel_trains_like_one_device(kind):
    import jax

    devices = jax.devices()
    assert len(devices) == DEVICES == 2
    distribution = keras.distribution.DataParallel(devices=devices)
    replicated = assert_same_training(kind, distribution.scope())
    # Every weight is replicated on both devices.
    for v in replicated.weights:
        assert v.value.sharding.device_set == set(devices), v.path


def mixed_float16_on_replicas(scope):
    """A group of two loss-scaled optimizers trained under `scope` and mixed_float16: each
    optimizer's halvings of its scale, and the skipped steps fit() logged for its update."""
    blocked = BACKEND == "tensorflow" and tensorflow_cannot("float16")
    if blocked:
        pytest.skip(blocked)
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
