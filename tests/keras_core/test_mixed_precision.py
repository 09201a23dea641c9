"""cf.Model under Keras's mixed precision policies (mixed_float16, mixed_bfloat16): the loss is
scaled before differentiation and the gradients unscaled before each update, as Keras's own train
steps do; each member of an optimizer group has a loss scale of its own; a step whose gradients
overflow is skipped, counted, and training goes on."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy
from keras import ops as K

from kernel_caps import tensorflow_cannot
from models import Parts, PenalisedCritic, Regressor, Score, f32

RNG = np.random.default_rng(11)
X = RNG.normal(size=(64, 3)).astype("float32")
Y = np.sin(X.sum(axis=1, keepdims=True)).astype("float32")
RING = (2.0 * np.stack([np.cos(a := RNG.uniform(0, 2 * np.pi, 64)), np.sin(a)], 1)).astype(
    "float32"
)

# One SGD step under a mixed policy against the float32 step from the same weights: the largest
# difference between the two weight updates, relative to the largest float32 update, may be 10
# unit roundoffs of the compute dtype (2**-11 for float16, 2**-8 for bfloat16). The forward and
# backward passes round every activation and gradient to that dtype, and the errors add up over
# a few layers and a batch's sums: measured, at most 8.0e-4 (float16) and 1.5e-2 (bfloat16) over
# the three backends and four objectives here. A gradient the LossScaleOptimizer unscales
# without the loss having been scaled is off by a factor of 2**15.
STEP_TOLERANCE = {"mixed_float16": 10 * 2.0**-11, "mixed_bfloat16": 10 * 2.0**-8}


def skip_where_tensorflow_cannot(policy_name):
    blocked = BACKEND == "tensorflow" and tensorflow_cannot(policy_name.removeprefix("mixed_"))
    if blocked:
        pytest.skip(blocked)


@pytest.fixture
def policy(request):
    skip_where_tensorflow_cannot(request.param)
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy("float32")


CASES = {
    "one": (lambda: Regressor(), lambda: keras.optimizers.SGD(0.1), (X, Y)),
    "several": (
        lambda: Parts(),
        lambda: {"a": keras.optimizers.SGD(0.1), "b": keras.optimizers.SGD(0.05)},
        (X, Y),
    ),
    "penalty": (lambda: PenalisedCritic(), lambda: keras.optimizers.SGD(0.05), (RING,)),
    "divergence": (lambda: Score(), lambda: keras.optimizers.SGD(0.05), (X[:, :2],)),
}


class Weights(keras.callbacks.Callback):
    """Trainable weights before training and after each batch, with the loss scales then."""

    def __init__(self):
        super().__init__()
        self.seen, self.scales, self.counters = [], [], []

    def snapshot(self):
        self.seen.append([np.array(to_numpy(v.value)) for v in self.model.trainable_variables])
        scaled = [
            o for o in optimizers(self.model) if isinstance(o, keras.optimizers.LossScaleOptimizer)
        ]
        self.scales.append([float(to_numpy(o.dynamic_scale.value)) for o in scaled])
        self.counters.append([int(to_numpy(o.step_counter.value)) for o in scaled])

    def on_train_begin(self, logs=None):
        self.snapshot()

    def on_train_batch_end(self, batch, logs=None):
        self.snapshot()


def optimizers(model):
    return (
        list(model.optimizer.members.values())
        if hasattr(model.optimizer, "members")
        else [model.optimizer]
    )


def one_step(case, policy_name):
    """The first step taken on one whole batch: (model, weights seen, logs, steps skipped before).
    A step whose float16 gradients overflow at the initial loss scale is skipped, its weights
    unchanged, and the batch is fed again at half the scale, as Keras does."""
    keras.config.set_dtype_policy(policy_name)
    keras.utils.set_random_seed(3)
    make_model, make_optimizer, data = CASES[case]
    model = make_model()
    model.compile(optimizer=make_optimizer())
    seen = Weights()
    for skips in range(8):
        history = model.fit(
            *data, batch_size=len(data[0]), epochs=1, shuffle=False, verbose=0, callbacks=[seen]
        )
        if any(not np.array_equal(a, b) for a, b in zip(seen.seen[0], seen.seen[-1])):
            return model, seen, history.history, skips
    raise AssertionError(f"{case}: 8 steps skipped in a row; loss scales {seen.scales}")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("case", list(CASES))
def test_one_sgd_step_equals_the_float32_step(policy, case):
    reference, ref_seen, _, _ = one_step(case, "float32")
    model, seen, logs, skips = one_step(case, policy)
    assert model.dtype_policy.name == policy
    assert model.compute_dtype == ("float16" if policy == "mixed_float16" else "bfloat16")
    scaled = policy == "mixed_float16"
    for optimizer in optimizers(model):
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    for w0, w1 in zip(ref_seen.seen[0], seen.seen[0]):  # the same seed, the same start
        np.testing.assert_array_equal(w0, w1)
    expected = [b - a for a, b in zip(ref_seen.seen[0], ref_seen.seen[-1])]
    got = [b - a for a, b in zip(seen.seen[0], seen.seen[-1])]
    largest = max(np.abs(d).max() for d in expected)
    assert largest > 1e-3
    error = max(np.abs(g - e).max() for g, e in zip(got, expected)) / largest
    assert error < STEP_TOLERANCE[policy], (case, error)
    skip_names = {k for k in logs if k.endswith("skipped_steps")}
    if scaled:
        # Each overflow halved the scale; the step taken counts one good step, as Keras counts.
        assert seen.scales[-1] == [2.0**15 / 2**skips] * len(optimizers(model))
        counts = (
            [2 if o.name == "a" else 1 for o in optimizers(model)] if case == "several" else [1]
        )
        assert seen.counters[-1] == counts
        assert skip_names == (
            {"a_skipped_steps", "b_skipped_steps"} if case == "several" else {"skipped_steps"}
        )
        assert all(logs[k] == [0.0] for k in skip_names)
        assert skips == 0 or case == "penalty"  # the only objective differentiating twice
    else:
        assert skips == 0 and skip_names == set()


def stock_keras_regressor(factor, rate):
    """The same network as Regressor, trained by Keras's own train step."""
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1)(keras.layers.Dense(16, activation="tanh")(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(rate), dynamic_growth_steps=3
        ),
        loss=lambda y, p: factor * K.mean((f32(p) - y) ** 2),
    )
    model.optimizer.build(model.trainable_variables)  # TensorFlow builds it in the first step
    return model


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_overflowing_steps_are_skipped_as_keras_skips_them_and_training_goes_on(policy):
    # A loss 30 times larger: at the initial scale of 2**15 its float16 gradients overflow.
    factor, rate, steps = 30.0, 3e-3, 16
    runs = {}
    for kind in ("cf", "keras"):
        keras.utils.set_random_seed(5)
        seen = Weights()
        if kind == "cf":
            model = Regressor(factor)
            model.compile(
                optimizer=keras.optimizers.LossScaleOptimizer(
                    keras.optimizers.SGD(rate), dynamic_growth_steps=3
                ),
            )
            start = model.evaluate(X, Y, verbose=0, return_dict=True)  # builds it; changes nothing
        else:
            model = stock_keras_regressor(factor, rate)
            model.set_weights(runs["cf"][1].seen[0])
        history = model.fit(
            X, Y, batch_size=len(X) // steps, epochs=1, shuffle=False, verbose=0, callbacks=[seen]
        )
        runs[kind] = (model, seen, history.history)
    (model, seen, logs), (_, stock_seen, _) = runs["cf"], runs["keras"]
    for w0, w1 in zip(seen.seen[0], stock_seen.seen[0]):
        np.testing.assert_array_equal(w0, w1)
    # The loss scale and its counter move batch by batch as they do under Keras's own step:
    # halved on each overflow, doubled after 3 good steps.
    assert seen.scales == stock_seen.scales
    assert seen.counters == stock_seen.counters
    skipped = [s1[0] < s0[0] for s0, s1 in zip(seen.scales, seen.scales[1:])]
    assert sum(skipped) >= 3 and skipped[0], seen.scales
    assert logs["skipped_steps"] == [float(sum(skipped))]
    for was_skipped, before, after in zip(skipped, seen.seen, seen.seen[1:]):
        changed = any(not np.array_equal(a, b) for a, b in zip(before, after))
        assert changed != was_skipped
    assert int(to_numpy(model.optimizer.iterations)) == steps - sum(skipped)
    # ... and trains on: the same weights as Keras's, and a lower loss than at the start.
    for w, w_stock in zip(seen.seen[-1], stock_seen.seen[-1]):
        np.testing.assert_allclose(w, w_stock, atol=2e-3)
    end = model.evaluate(X, Y, verbose=0, return_dict=True)
    assert set(end) == set(start) == {"loss"}  # evaluate() counts no skipped steps
    assert end["loss"] < 0.7 * start["loss"], (start, end)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_each_member_of_an_optimizer_group_has_its_own_loss_scale(policy):
    # Update a's loss is 3000 times larger: its gradients overflow at first, b's do not.
    keras.utils.set_random_seed(6)
    model = Parts(factor_a=3000.0)
    model.compile(optimizer={"a": keras.optimizers.SGD(1e-4), "b": keras.optimizers.SGD(0.05)})
    seen = Weights()
    history = model.fit(X, Y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[seen])
    a, b = model.optimizer.members["a"], model.optimizer.members["b"]
    assert isinstance(a, keras.optimizers.LossScaleOptimizer) and isinstance(
        b, keras.optimizers.LossScaleOptimizer
    )
    assert a.dynamic_scale is not b.dynamic_scale
    a_skips, b_skips = history.history["a_skipped_steps"], history.history["b_skipped_steps"]
    # No growth within 2000 steps: each skip halved its own optimizer's scale, and only its own.
    halvings = [round(np.log2(2.0**15 / scale)) for scale in seen.scales[-1]]
    assert [sum(a_skips), sum(b_skips)] == halvings, (a_skips, b_skips, seen.scales)
    assert a_skips[0] >= 3 + sum(b_skips), (a_skips, b_skips)
    assert int(to_numpy(a.iterations)) == 2 * 12 - sum(a_skips)
    assert int(to_numpy(b.iterations)) == 12 - sum(b_skips)
    losses = history.history["a_loss"]
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_a_saved_group_keeps_each_loss_scale_and_trains_on_equal(policy, tmp_path):
    keras.utils.set_random_seed(7)
    model = Parts(factor_a=3000.0)
    model.compile(optimizer={"a": keras.optimizers.SGD(1e-4), "b": keras.optimizers.Adam(1e-2)})
    model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"Parts": Parts})
    assert loaded.dtype_policy.name == "mixed_float16"
    members = loaded.optimizer.members
    assert [type(m).__name__ for m in members.values()] == ["LossScaleOptimizer"] * 2
    assert [type(m.inner_optimizer).__name__ for m in members.values()] == ["SGD", "Adam"]

    def scales(m):
        return [float(to_numpy(o.dynamic_scale.value)) for o in m.optimizer.members.values()]

    assert scales(loaded) == scales(model) and scales(model)[0] < scales(model)[1]
    for m in (model, loaded):
        m.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert scales(loaded) == scales(model)
    for v, w in zip(
        model.weights + model.optimizer.variables, loaded.weights + loaded.optimizer.variables
    ):
        np.testing.assert_array_equal(to_numpy(v.value), to_numpy(w.value), err_msg=v.path)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_a_checkpoint_keeps_each_members_loss_scale(policy):
    """customfit's checkpoint (customfit/loss_scale_state.py) carries each LossScaleOptimizer's
    scale and growth count, so a resumed float16 run does not start its scales afresh."""
    from types import SimpleNamespace

    from customfit import loss_scale_state

    def trained(epochs):
        keras.utils.set_random_seed(7)
        model = Parts(factor_a=3000.0)
        model.compile(optimizer={"a": keras.optimizers.SGD(1e-4), "b": keras.optimizers.SGD(0.05)})
        model.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
        return SimpleNamespace(model=model)

    trainer, fresh = trained(1), trained(0)
    saved = loss_scale_state.arrays(trainer)
    names = ["model.optimizer.a", "model.optimizer.b"]
    assert sorted(saved) == sorted(
        f"loss_scale/{n}/{k}" for n in names for k in ("scale", "growth")
    )
    assert float(saved["loss_scale/model.optimizer.a/scale"]) < 2.0**15  # a's steps overflowed
    assert int(saved["loss_scale/model.optimizer.b/growth"]) >= 1  # b counts its good steps
    assert loss_scale_state.arrays(fresh) != saved
    loss_scale_state.restore(fresh, saved)
    restored = loss_scale_state.arrays(fresh)
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)


def test_an_optimizers_own_loss_scale_factor_is_applied_and_undone():
    # Keras's optimizers divide the gradients by `loss_scale_factor`; the step must multiply the
    # loss by it first (optimizer.scale_loss), or SGD moves 2**10 times too little.
    moved = []
    for factor in (None, 2.0**10):
        keras.utils.set_random_seed(3)
        model = Regressor()
        model.compile(optimizer=keras.optimizers.SGD(0.1, loss_scale_factor=factor))
        seen = Weights()
        model.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0, callbacks=[seen])
        moved.append([b - a for a, b in zip(seen.seen[0], seen.seen[-1])])
    assert max(np.abs(d).max() for d in moved[0]) > 1e-3
    for plain, scaled in zip(*moved):
        np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-7)
