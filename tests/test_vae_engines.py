"""The VAE engines, number for number.

Each engine runs in its own process (tests/workers/vae_worker.py), with the Keras backend that
customfit.registry.KERAS_BACKEND names for it. From the same canonical weights, the same batch and
the same reparameterisation noise, every engine must give the objective's value and gradients
that the others give (1e-4 relative), the value that a float64 NumPy forward pass (written here,
sharing no code with any engine) gives, and gradients whose directional derivatives match that
forward pass's finite differences. Each engine must also resume from its state() exactly and
repeat itself exactly under the same seed.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from layout_helpers import vae_glorot_weights
from worker_jobs import reports_of, run_worker, worker_path

from customfit import registry
from customfit.data import digits_split
from customfit.tasks.vae import layout

WORKER = worker_path("vae")
RTOL = 1e-4
BATCH = 24
EVAL_BATCH = 7  # uneven: evaluate must weight its last, shorter batch by its size
CASES = {  # the two models' networks and objectives, at their own temperatures and latent sizes
    "default": {"network": "mlp", "objective": "elbo", "latent": 8, "temperature": 0.1},
    "lecture": {"network": "conv", "objective": "lecture", "latent": 10, "temperature": 0.01},
}
TRAINING = {**CASES["default"], "n_train": 192, "batch_size": 48, "lr": 1e-3, "seed": 0}


# ---------------------------------------------------------------- the NumPy reference, float64


def _relu(h):
    return np.maximum(h, 0.0)


def _sigmoid(h):
    return 1.0 / (1.0 + np.exp(-h))


def _leaky(h):
    return np.where(h > 0, h, layout.LEAKY_SLOPE * h)


def _conv(x, kernel, bias):
    """Valid, stride 1; kernel (kh, kw, in, out)."""
    k = kernel.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # N,H',W',C,k,k
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def _conv_transpose(x, kernel, bias):
    """Valid, stride 1, the gradient of a convolution; kernel (kh, kw, out, in)."""
    k = kernel.shape[0]
    n, h, w, _ = x.shape
    out = np.zeros((n, h + k - 1, w + k - 1, kernel.shape[2]))
    for a in range(k):
        for b in range(k):
            out[:, a : a + h, b : b + w] += np.einsum("nhwi,oi->nhwo", x, kernel[a, b])
    return out + bias


def numpy_forward(network, weights, x):
    """(mu, logvar, decode): the encoder's outputs and the decoder as a function."""
    e = [np.asarray(w, np.float64) for w in weights["encoder"]]
    d = [np.asarray(w, np.float64) for w in weights["decoder"]]
    x = np.asarray(x, np.float64)
    if network == "mlp":
        h = _relu(x.reshape(len(x), -1) @ e[0] + e[1])
        h = _relu(h @ e[2] + e[3])
        mu, logvar = h @ e[4] + e[5], h @ e[6] + e[7]

        def decode(z):
            g = _relu(z @ d[0] + d[1])
            g = _relu(g @ d[2] + d[3])
            return _sigmoid(g @ d[4] + d[5]).reshape(-1, 8, 8, 1)
    else:
        h = _relu(_conv(x, e[0], e[1]))
        h = _relu(_conv(h, e[2], e[3]))
        h = _relu(_conv(h, e[4], e[5])).reshape(len(x), -1)
        mu, logvar = h @ e[6] + e[7], h @ e[8] + e[9]

        def decode(z):
            g = _relu(z @ d[0] + d[1]).reshape(-1, 4, 4, 16)
            g = _leaky(_conv_transpose(g, d[2], d[3]))
            g = _leaky(_conv_transpose(g, d[4], d[5]))
            return _sigmoid(_conv_transpose(g, d[6], d[7]))

    return mu, logvar, decode


def numpy_figures(case, weights, x, eps):
    """The objective's figures for batch x and noise eps, in float64."""
    mu, logvar, decode = numpy_forward(case["network"], weights, x)
    x = np.asarray(x, np.float64)
    x_hat = decode(mu + eps * np.exp(0.5 * logvar))
    T = case["temperature"]
    kl_terms = 0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)
    squares = (x - x_hat) ** 2
    kl_image, squares_image = kl_terms.sum(axis=1), squares.reshape(len(x), -1).sum(axis=1)
    if case["objective"] == "elbo":
        kl, reconstruction = kl_image.mean(), squares_image.mean() / (2 * T)
    else:
        kl, reconstruction = kl_terms.mean(), squares.mean() / (2 * T)
    return {
        "loss": kl + reconstruction,
        "kl": kl,
        "reconstruction": reconstruction,
        "neg_elbo": (kl_image + squares_image / (2 * T)).mean() + 32 * math.log(2 * math.pi * T),
    }


def _flat(weights):
    return np.concatenate([np.ravel(w) for net in layout.NETS for w in weights[net]]).astype(
        np.float64
    )


def _unflat(vector, like):
    out, i = {}, 0
    for net in layout.NETS:
        out[net] = []
        for w in like[net]:
            out[net].append(vector[i : i + w.size].reshape(w.shape))
            i += w.size
    return out


def _directional(case, weights, x, eps, direction, h=1e-6):
    flat = _flat(weights)
    plus = numpy_figures(case, _unflat(flat + h * direction, weights), x, eps)["loss"]
    minus = numpy_figures(case, _unflat(flat - h * direction, weights), x, eps)["loss"]
    return (plus - minus) / (2 * h)


# ---------------------------------------------------------------- inputs and workers


@pytest.fixture(scope="module")
def inputs():
    """A real batch, noise and Glorot-uniform weights per case, made once here with NumPy."""
    x = digits_split().x_train[:BATCH]
    made = {}
    for i, (name, case) in enumerate(CASES.items()):
        eps = (
            np.random.default_rng(100 + i)
            .standard_normal((BATCH, case["latent"]))
            .astype(np.float32)
        )
        made[name] = (x, eps, vae_glorot_weights(case["network"], case["latent"], i))
    return made


def _selected_engines(session):
    engines = set()
    for item in session.items:
        if item.module.__name__ == __name__ and hasattr(item, "callspec"):
            engines.add(item.callspec.params.get("engine"))
    selected = [e for e in registry.ENGINES if e in engines]
    if any(
        item.module.__name__ == __name__ and item.originalname == "test_engines_agree"
        for item in session.items
    ):
        selected = list(registry.ENGINES)
    return selected


def _run_worker(job, folder):
    return run_worker(
        WORKER, job, folder, registry.KERAS_BACKEND[job["engine"]], 600, one_thread=True
    )


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, inputs):
    """engine -> its worker's report; the workers run two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("vae-workers")
    arrays = {}
    for name, (x, eps, weights) in inputs.items():
        arrays[f"{name}/x"], arrays[f"{name}/eps"] = x, eps
        for net in layout.NETS:
            arrays.update({f"{name}/w/{net}/{i}": w for i, w in enumerate(weights[net])})
    np.savez(folder / "inputs.npz", **arrays)
    parity = [{"name": name, **case} for name, case in CASES.items()]
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        engine: pool.submit(
            _run_worker,
            {
                "engine": engine,
                "inputs": str(folder / "inputs.npz"),
                "parity": parity,
                "eval_batch_size": EVAL_BATCH,
                "training": TRAINING,
            },
            folder,
        )
        for engine in _selected_engines(request.session)
    }

    yield reports_of(futures)
    pool.shutdown(wait=True)


# ---------------------------------------------------------------- the reference itself


def test_numpy_reference_conv_transpose_is_the_gradient_of_a_conv():
    """<conv_transpose(y, K), x> == <y, conv(x, K)> with the kernel read as (kh, kw, in, out)
    for the convolution: the conv-transpose is the adjoint (the gradient) of the convolution."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 5))  # conv: in 2, out 5
    x, y = rng.normal(size=(2, 6, 6, 2)), rng.normal(size=(2, 4, 4, 5))
    lhs = np.sum(_conv_transpose(y, kernel, 0.0) * x)  # conv-transpose: in 5, out 2
    rhs = np.sum(y * _conv(x, kernel, 0.0))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_numpy_reference_is_the_lecture_formula(case, inputs):
    """The lecture model's loss is its reduce_means; the default's is the per-image sums; both
    give the same negative ELBO, and the lecture's loss is 1/latent times the ELBO objective at
    the temperature T * 64 / latent."""
    x, eps, weights = inputs[case]
    spec = CASES[case]
    figures = numpy_figures(spec, weights, x, eps)
    other = numpy_figures(
        {**spec, "objective": "elbo" if spec["objective"] == "lecture" else "lecture"},
        weights,
        x,
        eps,
    )
    assert figures["neg_elbo"] == pytest.approx(other["neg_elbo"], rel=1e-12)
    lecture = figures if spec["objective"] == "lecture" else other
    effective = numpy_figures(
        {**spec, "objective": "elbo", "temperature": spec["temperature"] * 64 / spec["latent"]},
        weights,
        x,
        eps,
    )
    assert lecture["loss"] == pytest.approx(effective["loss"] / spec["latent"], rel=1e-12)
    assert figures["loss"] == pytest.approx(figures["kl"] + figures["reconstruction"], rel=1e-12)
    assert 1.0 < figures["loss"] < 1e4


# ---------------------------------------------------------------- parity


def _relative(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def _grads(report, case):
    shapes = layout.canonical_shapes(CASES[case]["network"], CASES[case]["latent"])
    return {
        net: [report["arrays"][f"{case}/grad/{net}/{i}"] for i in range(len(shapes[net]))]
        for net in layout.NETS
    }


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_objective_and_gradients_match_numpy(engine, case, results, inputs):
    x, eps, weights = inputs[case]
    spec = CASES[case]
    expected = numpy_figures(spec, weights, x, eps)
    report = results(engine)
    got = report["parity"][case]
    assert got["weights_round_trip"], "get_weights() after set_weights() changed the weights"
    assert abs(got["loss"] - expected["loss"]) <= RTOL * expected["loss"], (got["loss"], expected)
    grads = _grads(report, case)
    layout.check_weights(layout.canonical_shapes(spec["network"], spec["latent"]), grads)
    gradient = _flat(grads)
    norm = np.linalg.norm(gradient)
    assert norm > 1e-3
    # Along the gradient itself and along a random direction, the directional derivative is what
    # finite differences of the float64 forward pass give.
    random = np.random.default_rng(5).normal(size=gradient.shape)
    for direction in (gradient / norm, random / np.linalg.norm(random)):
        numeric = _directional(spec, weights, x, eps, direction)
        assert abs(numeric - gradient @ direction) <= RTOL * norm, (numeric, gradient @ direction)
    # The encoder and decoder as the spec sees them (encode(), decode()).
    mu, logvar, decode = numpy_forward(spec["network"], weights, x)
    arrays = report["arrays"]
    np.testing.assert_allclose(arrays[f"{case}/mu"], mu, rtol=0, atol=1e-5)
    np.testing.assert_allclose(arrays[f"{case}/logvar"], logvar, rtol=0, atol=1e-5)
    np.testing.assert_allclose(arrays[f"{case}/decoded"], decode(mu)[..., 0], rtol=0, atol=1e-5)
    # evaluate(): its noise is its own, but the KL term is not noisy: the mean over 24 images
    # in batches of 7, 7, 7, 3 must be the plain mean (each batch weighted by its size).
    assert got["evaluate"]["kl"] == pytest.approx(expected["kl"], rel=1e-5)
    assert set(got["evaluate"]) == set(layout.FIGURES)
    assert got["evaluate"]["loss"] == pytest.approx(
        got["evaluate"]["kl"] + got["evaluate"]["reconstruction"], rel=1e-5
    )


@pytest.mark.parametrize("case", list(CASES))
def test_engines_agree(case, results):
    """The six engines against each other: the same objective and gradients, 1e-4 relative."""
    reports = {engine: results(engine) for engine in registry.ENGINES}
    first = registry.ENGINES[0]
    base_loss, base = reports[first]["parity"][case]["loss"], _grads(reports[first], case)
    for engine in registry.ENGINES[1:]:
        got = reports[engine]["parity"][case]["loss"]
        assert abs(got - base_loss) <= RTOL * abs(base_loss), (engine, got, base_loss)
        grads = _grads(reports[engine], case)
        for net in layout.NETS:
            for i, (g, b) in enumerate(zip(grads[net], base[net])):
                assert _relative(g, b) <= RTOL, (engine, net, i, _relative(g, b))


# ---------------------------------------------------------------- resume, repeat, sample


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_resumed_training_equals_uninterrupted_training(engine, results):
    report = results(engine)
    steps = TRAINING["n_train"] // TRAINING["batch_size"]
    assert report["state_meta"]["format"] == layout.STATE_FORMAT
    assert report["state_step"] == steps  # Adam's step count travelled
    shapes = layout.canonical_shapes(TRAINING["network"], TRAINING["latent"])
    expected_names = sorted(
        [
            f"{prefix}/{net}/{i}"
            for prefix in ("weights", "adam/m", "adam/v")
            for net in layout.NETS
            for i in range(len(shapes[net]))
        ]
        + ["adam/step"]
    )
    assert report["state_names"] == expected_names  # the same names from every engine
    assert report["state_kept"], "the arrays state() returned changed as training went on"
    # B repeats A (a new Trainer, the same seed); C, resumed from B's state after epoch 1,
    # trains epoch 2 exactly as A did: the same running means, weights and Adam state.
    assert [e["batches"] for e in report["B"]] == [e["batches"] for e in report["A"]]
    assert report["C"][0]["batches"] == report["A"][1]["batches"]
    arrays = report["arrays"]
    a_keys = [k for k in arrays if k.startswith("A/")]
    assert len(a_keys) == 4 * sum(map(len, shapes.values())) + 1  # weights, then the state
    for key in a_keys:
        assert np.array_equal(arrays[key], arrays["B" + key[1:]]), key
        assert np.array_equal(arrays[key], arrays["C" + key[1:]]), key
    # ... and the seed matters.
    assert report["E"][0]["batches"] != report["A"][0]["batches"]


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_training_reports_running_means_and_learns(engine, results):
    report = results(engine)
    for epoch in report["A"]:
        batches = epoch["batches"]
        assert len(batches) == TRAINING["n_train"] // TRAINING["batch_size"]
        assert all(set(b) == set(layout.FIGURES) for b in batches)
        assert epoch["means"] == pytest.approx(batches[-1], rel=1e-6)
        for b in batches:
            assert b["loss"] == pytest.approx(b["kl"] + b["reconstruction"], rel=1e-5)
            assert b["neg_elbo"] == pytest.approx(
                b["loss"] + layout.gaussian_constant(TRAINING["temperature"]), rel=1e-5, abs=1e-4
            )
    assert report["A"][1]["means"]["loss"] < report["A"][0]["means"]["loss"]
    # evaluate() draws the same noise at every call: the same figures twice.
    assert report["A_evaluate"][0] == report["A_evaluate"][1]


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_samples_are_decoder_means_of_seeded_draws(engine, results):
    arrays = results(engine)["arrays"]
    samples = arrays["sample/seed0"]
    assert samples.shape == (50, 8, 8) and samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert np.array_equal(samples, arrays["sample/seed0_again"])
    assert not np.allclose(samples, arrays["sample/seed1"])
    # Scaling the prior's standard deviation shrinks the samples toward the decoding of z = 0.
    centre = arrays["decode/zeros"][:1]
    half, full = arrays["sample/seed0_half"], samples
    assert np.abs(half - centre).mean() < np.abs(full - centre).mean()
    assert arrays["decode/zeros"].shape == (3, 8, 8)
