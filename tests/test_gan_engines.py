"""The GAN engines, number for number.

Each engine runs in its own process (tests/workers/gan_worker.py), with the Keras backend that
customfit.registry.KERAS_BACKEND names for it. From the same canonical weights (batch-norm
statistics included), the same real batch and the same latents, every engine must give both
objectives' values and gradients (the discriminator's and the generator's) and the generator's
inference-mode digits; the values and digits must equal a float64 NumPy forward pass written
here (sharing no code with any engine), the gradients must agree with each other and with that
forward pass's finite differences. Each engine must also resume from its state() exactly, repeat
itself under the same seed, and (keras-* engines) move only the network an update trains.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from layout_helpers import gan_random_weights
from worker_jobs import reports_of, run_worker, worker_path

from customfit import registry
from customfit.data import digits_split
from customfit.tasks.gan import layout

WORKER = worker_path("gan")
KERAS = ("keras-tensorflow", "keras-torch", "keras-jax")
RTOL = 1e-4  # float32 engines against float64 NumPy, and against each other
LATENT = 10
MODELS = ("lecture", "default")
TRAINING = {
    "model": "default",
    "n_train": 96,
    "batch_size": 32,
    "critic_steps": 2,
    "lr": 1e-3,
    "seed": 0,
}


# ---------------------------------------------------------------- the NumPy reference, float64


def _conv(x, kernel, stride=1, pad=(0, 0)):
    """Keras's Conv2D, kernel (kh, kw, in, out), padding `pad` (before, after) on H and W."""
    k = kernel.shape[0]
    padded = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (N, Ho, Wo, C, k, k)
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel)


def _conv_transpose(x, kernel, stride=1, crop=(0, 0)):
    """Keras's Conv2DTranspose, kernel (kh, kw, out, in): each input pixel adds kernel x value
    to the output at stride steps; then `crop` (before, after) pixels come off H and W."""
    n, h, w, _ = x.shape
    k, out = kernel.shape[0], kernel.shape[2]
    full = np.zeros((n, (h - 1) * stride + k, (w - 1) * stride + k, out))
    for a in range(k):
        for b in range(k):
            full[
                :, a : a + (h - 1) * stride + 1 : stride, b : b + (w - 1) * stride + 1 : stride
            ] += np.einsum("nhwc,oc->nhwo", x, kernel[a, b])
    return full[:, crop[0] : full.shape[1] - crop[1], crop[0] : full.shape[2] - crop[1]]


def _norm(h, p, name, training, eps):
    if training:
        axes = tuple(range(h.ndim - 1))
        mean, var = h.mean(axis=axes), h.var(axis=axes)
    else:
        mean, var = p[f"{name}/mean"], p[f"{name}/variance"]
    return p[f"{name}/gamma"] * (h - mean) / np.sqrt(var + eps) + p[f"{name}/beta"]


def relu(h):
    return np.maximum(h, 0.0)


def leaky(h):
    return np.where(h > 0, h, layout.DEFAULT["leaky_slope"] * h)


def sigmoid(h):
    return 1.0 / (1.0 + np.exp(-h))


def softplus(h):
    return np.logaddexp(0.0, h)


def _params(model, weights):
    return {
        net: {
            e.name: np.asarray(a, np.float64)
            for e, a in zip(layout.entries(model, LATENT)[net], weights[net])
        }
        for net in layout.NETWORKS
    }


def generator(model, p, z, training):
    bias = lambda name: p.get(f"{name}/bias", 0.0)  # noqa: E731
    if model == "lecture":
        eps = layout.LECTURE["bn_epsilon"]
        h = relu(z @ p["dense/kernel"] + p["dense/bias"]).reshape(-1, 4, 4, 16)
        h = _norm(h, p, "norm0", training, eps)
        h = _norm(
            relu(_conv_transpose(h, p["up1/kernel"]) + bias("up1")), p, "norm1", training, eps
        )
        h = _norm(
            relu(_conv_transpose(h, p["up2/kernel"]) + bias("up2")), p, "norm2", training, eps
        )
        return sigmoid(_conv_transpose(h, p["out/kernel"]) + bias("out"))
    eps, w = layout.DEFAULT["bn_epsilon"], layout.DEFAULT["width"]
    h = (z @ p["dense/kernel"] + p["dense/bias"]).reshape(-1, 4, 4, w)
    h = relu(_norm(h, p, "norm0", training, eps))
    h = relu(
        _norm(_conv_transpose(h, p["up/kernel"], 2, (1, 1)) + bias("up"), p, "norm1", training, eps)
    )
    return sigmoid(_conv_transpose(h, p["out/kernel"], 1, (1, 1)) + bias("out"))


def discriminator(model, p, x, training):
    if model == "lecture":
        h = relu(_conv(x, p["conv1/kernel"]) + p["conv1/bias"])
        h = relu(_conv(h, p["conv2/kernel"]) + p["conv2/bias"])
        h = relu(_conv(h, p["conv3/kernel"]) + p["conv3/bias"])
    else:
        eps = layout.DEFAULT["bn_epsilon"]
        h = leaky(_conv(x, p["conv1/kernel"], 1, (1, 1)) + p["conv1/bias"])
        h = leaky(_norm(_conv(h, p["conv2/kernel"], 2, (1, 1)), p, "norm", training, eps))
    return h.reshape(len(h), -1) @ p["logit/kernel"] + p["logit/bias"]


def numpy_objectives(model, weights, x, z_dis, z_gen):
    """(discriminator objective, generator objective, inference-mode digits), float64."""
    p = _params(model, weights)
    x = np.asarray(x, np.float64)
    fake = generator(model, p["gen"], np.asarray(z_dis, np.float64), True)
    dis = (
        softplus(-discriminator(model, p["dis"], x, True)).mean()
        + softplus(discriminator(model, p["dis"], fake, True)).mean()
    )
    fake = generator(model, p["gen"], np.asarray(z_gen, np.float64), True)
    gen = softplus(-discriminator(model, p["dis"], fake, True)).mean()
    digits = generator(model, p["gen"], np.asarray(z_gen, np.float64), False)[..., 0]
    return float(dis), float(gen), digits


def _directional(model, weights, x, z_dis, z_gen, objective, direction, h=1e-5):
    """Central difference of an objective along `direction` (over its network's trainable
    entries), float64."""
    net = {"dis": "dis", "gen": "gen"}[objective]
    entries = layout.entries(model, LATENT)[net]

    def moved(sign):
        shifted = {k: [np.asarray(a, np.float64) for a in v] for k, v in weights.items()}
        steps = iter(direction)
        for i, e in enumerate(entries):
            if e.trainable:
                shifted[net][i] = shifted[net][i] + sign * h * next(steps)
        values = numpy_objectives(model, shifted, x, z_dis, z_gen)
        return values[0] if objective == "dis" else values[1]

    return (moved(1) - moved(-1)) / (2 * h)


# ---------------------------------------------------------------- inputs and workers


@pytest.fixture(scope="module")
def inputs():
    x = digits_split().x_train[:32]
    rng = np.random.default_rng(11)
    cases = {}
    for i, model in enumerate(MODELS):
        cases[model] = {
            "x": x,
            "weights": gan_random_weights(model, LATENT, seed=i + 1),
            "z_dis": rng.standard_normal((32, LATENT)).astype(np.float32),
            "z_gen": rng.standard_normal((24, LATENT)).astype(np.float32),
        }
    return cases


# JAX compiles every program it runs (the networks' initialisers included), which makes its
# workers the slowest: they start first.
SLOWEST_FIRST = ("keras-jax", "flax", "keras-tensorflow", "tensorflow", "keras-torch", "torch")


def _selected_engines(session):
    engines = set()
    for item in session.items:
        if item.module.__name__ == __name__ and hasattr(item, "callspec"):
            engines.add(item.callspec.params.get("engine"))
            if item.originalname == "test_gradients_equal_across_engines":
                engines.add("tensorflow")  # the anchor every engine's gradients are held to
    return [e for e in SLOWEST_FIRST if e in engines]


def _run_worker(job, folder):
    return run_worker(
        WORKER, job, folder, registry.KERAS_BACKEND[job["engine"]], 600, one_thread=True
    )


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, inputs):
    """engine -> its worker's report; the workers run two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("gan-workers")
    arrays = {}
    for model, case in inputs.items():
        for key in ("x", "z_dis", "z_gen"):
            arrays[f"{model}/{key}"] = case[key]
        for net in layout.NETWORKS:
            arrays.update({f"{model}/w/{net}/{i}": a for i, a in enumerate(case["weights"][net])})
    np.savez(folder / "inputs.npz", **arrays)
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {}
    for engine in _selected_engines(request.session):
        job = {
            "engine": engine,
            "inputs": str(folder / "inputs.npz"),
            "models": list(MODELS),
            "latent": LATENT,
            "training": TRAINING,
            "frozen": engine in KERAS,
        }
        futures[engine] = pool.submit(_run_worker, job, folder)

    yield reports_of(futures)
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def reference(inputs):
    return {
        model: numpy_objectives(model, c["weights"], c["x"], c["z_dis"], c["z_gen"])
        for model, c in inputs.items()
    }


def _relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ---------------------------------------------------------------- the reference itself


def test_numpy_conv_transpose_is_the_gradient_of_conv():
    """The reference's transposed convolution is the adjoint of its convolution (what Keras's
    Conv2DTranspose means), for the strides and crops the models use."""
    rng = np.random.default_rng(0)
    for k, stride, pad, size in ((2, 1, (0, 0), 4), (3, 1, (1, 1), 8), (4, 2, (1, 1), 4)):
        kernel = rng.normal(size=(k, k, 3, 5))  # conv: (kh, kw, in=3, out=5)
        small = rng.normal(size=(2, size, size, 5))
        big_size = (size - 1) * stride + k - sum(pad)
        big = rng.normal(size=(2, big_size, big_size, 3))
        # <conv(big), small> == <big, conv_transpose(small)> with the same kernel (kh, kw, 3, 5)
        left = np.sum(_conv(big, kernel, stride, pad) * small)
        right = np.sum(big * _conv_transpose(small, kernel, stride, pad))
        assert abs(left - right) <= 1e-9 * abs(left), (k, stride, left, right)


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_objectives_and_digits_equal_numpy(engine, model, results, inputs, reference):
    got = results(engine)["parity"][model]
    dis, gen, digits = reference[model]
    assert got["keys"] == ["dis", "gen"] and got["alone_keys"] == ["gen"]
    assert abs(got["dis_value"] - dis) <= RTOL * dis, (got["dis_value"], dis)
    assert abs(got["gen_value"] - gen) <= RTOL * gen, (got["gen_value"], gen)
    assert got["alone_gen"] == pytest.approx(got["gen_value"], rel=1e-6)
    generated = results(engine)["arrays"][f"{model}/generated"]
    assert generated.shape == (24, 8, 8)
    np.testing.assert_allclose(generated, digits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_gradients_equal_across_engines(engine, model, results, inputs):
    """Every gradient array within 1e-4 (relative) of the tensorflow engine's, and the
    tensorflow engine's along a random direction within 1e-4 of NumPy's finite difference."""
    arrays = results(engine)["arrays"]
    anchor = results("tensorflow")["arrays"]
    case = inputs[model]
    rng = np.random.default_rng(5)
    for objective in layout.OBJECTIVES:
        learned = layout.trainable(layout.entries(model, LATENT)[objective])
        grads = [arrays[f"{model}/{objective}/grad/{i}"] for i in range(len(learned))]
        assert f"{model}/{objective}/grad/{len(learned)}" not in arrays
        for e, grad in zip(learned, grads):
            assert grad.shape == e.shape, (objective, e.name, grad.shape)
            expected = anchor[f"{model}/{objective}/grad/{learned.index(e)}"]
            assert np.linalg.norm(expected) > 1e-4, (objective, e.name)  # no structural zeros
            assert _relative(grad, expected) <= RTOL, (objective, e.name, _relative(grad, expected))
        if engine == "tensorflow":
            direction = [rng.normal(size=e.shape) for e in learned]
            norm = math.sqrt(sum(float(np.sum(v * v)) for v in direction))
            direction = [v / norm for v in direction]
            numeric = _directional(
                model,
                case["weights"],
                case["x"],
                case["z_dis"],
                case["z_gen"],
                objective,
                direction,
            )
            analytic = sum(
                float(np.sum(np.asarray(g, np.float64) * v)) for g, v in zip(grads, direction)
            )
            assert abs(numeric - analytic) <= RTOL * abs(analytic) + 1e-7, (
                objective,
                numeric,
                analytic,
            )


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_parity_hook_moves_nothing(engine, results):
    for model in MODELS:
        got = results(engine)["parity"][model]
        assert got["weights_round_trip"], "get_weights() after set_weights() changed the weights"
        assert got["state_unchanged"], "objective_and_grads moved weights, statistics or slots"


# ---------------------------------------------------------------- resume and repeat


def _batches_per_epoch():
    return math.ceil(TRAINING["n_train"] / TRAINING["batch_size"])


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_resumed_run_equals_uninterrupted_run(engine, results):
    """Both networks' weights and batch-norm statistics, both optimizers' moments and steps."""
    report = results(engine)
    assert report["state_meta"]["format"] == layout.STATE_FORMAT
    batches = _batches_per_epoch()
    assert report["state_steps"] == {"gen": batches, "dis": TRAINING["critic_steps"] * batches}
    assert report["state_kept"], "the arrays state() returned changed as training went on"
    assert report["C"][0]["batches"] == report["A"][1]["batches"]
    assert report["C"][0]["means"] == report["A"][1]["means"]
    assert report["C"][0]["val"] == report["A"][1]["val"]
    arrays = report["arrays"]
    names = [k[len("A/state/") :] for k in arrays if k.startswith("A/state/")]
    expected = ["gen/adam/step", "dis/adam/step"]
    for net, entry_list in layout.entries(TRAINING["model"], LATENT).items():
        expected += [f"{net}/{e.name}" for e in entry_list]
        expected += [
            f"{net}/adam/{m}/{e.name}" for e in layout.trainable(entry_list) for m in ("m", "v")
        ]
    assert sorted(names) == sorted(expected)
    for name in names:
        np.testing.assert_array_equal(
            arrays[f"C/state/{name}"], arrays[f"A/state/{name}"], err_msg=name
        )
    # The statistics did move in training (so the comparison above means something).
    assert not np.array_equal(arrays["A/state/gen/norm0/mean"], np.zeros(layout.DEFAULT["width"]))
    assert not np.array_equal(arrays["A/state/dis/norm/variance"], np.ones(layout.DEFAULT["width"]))


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_same_seed_same_run_other_seed_other_run(engine, results):
    report = results(engine)
    a = report["A"]
    assert [e["batches"] for e in report["B"]] == [e["batches"] for e in a]
    assert [e["val"] for e in report["B"]] == [e["val"] for e in a]
    arrays = report["arrays"]
    for key in [k for k in arrays if k.startswith("A/state/")]:
        np.testing.assert_array_equal(arrays["B" + key[1:]], arrays[key], err_msg=key)
    assert report["initial_weights_follow_the_seed"] == {
        "same_seed_same": True,
        "other_seed_other": True,
    }
    np.testing.assert_array_equal(arrays["samples_0"], arrays["samples_0_again"])
    assert not np.array_equal(arrays["samples_0"], arrays["samples_1"])
    assert arrays["samples_0"].shape == (20, 8, 8)
    assert 0.0 <= arrays["samples_0"].min() and arrays["samples_0"].max() <= 1.0


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_train_epoch_reports_running_means(engine, results):
    for epoch in results(engine)["A"]:
        batches = epoch["batches"]
        assert len(batches) == _batches_per_epoch()
        assert all(list(b) == ["dis_loss", "gen_loss"] for b in batches)
        assert epoch["means"] == pytest.approx(batches[-1], rel=1e-6)
        assert all(0.0 < v < 20.0 for b in batches for v in b.values())
        assert sorted(epoch["val"]) == ["dis_loss", "gen_loss"]
        assert all(0.0 < v < 50.0 and math.isfinite(v) for v in epoch["val"].values())


# ---------------------------------------------------------------- cf.frozen (keras-* engines)


@pytest.mark.parametrize("engine", KERAS)
def test_an_update_moves_its_own_network_only(engine, results):
    """One fit() step of the generator's update alone (the discriminator's alone): the other
    network's weights and batch-norm moving statistics are bit for bit as they were, its own
    moved. Without cf.frozen, the generator's update moves the discriminator's statistics."""
    frozen = results(engine)["frozen"]
    own = {"gen_only": "gen", "dis_only": "dis"}
    for case, net in own.items():
        moved = frozen[case]
        other = "dis" if net == "gen" else "gen"
        assert not any(v for k, v in moved.items() if k.startswith(other + "/")), (case, moved)
        assert all(v for k, v in moved.items() if k.startswith(net + "/")), (case, moved)
    unfrozen = frozen["gen_only_unfrozen"]
    assert unfrozen["dis/norm/mean"] and unfrozen["dis/norm/variance"]
    dis_entries = layout.entries("default", LATENT)["dis"]
    assert not any(unfrozen[f"dis/{e.name}"] for e in layout.trainable(dis_entries))
