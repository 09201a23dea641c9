"""The score engines, number for number.

Each engine runs in its own process (tests/workers/score_worker.py), with the Keras backend that
customfit.registry.KERAS_BACKEND names for it. From the same canonical weights, the same batch and
the same draws (Hutchinson probes; noise levels and noise), every engine must give the objective's
value and gradients that the others give (1e-4 relative), the value that a float64 NumPy forward
pass (written here, sharing no code with any engine) gives, and gradients whose directional
derivatives match that forward pass's finite differences; the exact divergence inside the
lecture's loss included. One Langevin step from the same point with the same noise, and the
denoising step, must agree too. Each engine must also resume from its state() exactly (the
cosine schedule's place included) and repeat itself exactly under the same seed.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import warm
from layout_helpers import score_glorot_weights
from worker_jobs import reports_of

from customfit import registry
from customfit.data import digits_split, toy_split
from customfit.tasks.score import layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "workers", "score_worker.py")
RTOL = 1e-4
BATCH = 24
EVAL_BATCH = 7  # uneven: evaluate must weight its last, shorter batch by its size
TOY_SIGMAS = layout.noise_levels(4.0, 0.05, 20)
DIGIT_SIGMAS = layout.noise_levels(5.0, 0.02, 20)
LEVEL = 7
CASES = {
    "lecture_exact": {
        "method": "lecture",
        "network": "lecture",
        "divergence": "exact",
        "sigmas": None,
        "eps": 0.01,
        "level": None,
    },
    "lecture_hutchinson": {
        "method": "lecture",
        "network": "lecture",
        "divergence": "hutchinson",
        "sigmas": None,
        "eps": 0.01,
        "level": None,
    },
    "dsm_toy": {
        "method": "dsm",
        "network": "toy",
        "divergence": None,
        "sigmas": TOY_SIGMAS.tolist(),
        "eps": 0.2 * float(TOY_SIGMAS[LEVEL]) ** 2,
        "level": LEVEL,
    },
    "dsm_digits": {
        "method": "dsm",
        "network": "digits",
        "divergence": None,
        "sigmas": DIGIT_SIGMAS.tolist(),
        "eps": 0.05 * float(DIGIT_SIGMAS[LEVEL]) ** 2,
        "level": LEVEL,
    },
}
TRAINING = {
    "method": "dsm",
    "network": "toy",
    "sigmas": TOY_SIGMAS.tolist(),
    "n_train": 256,
    "batch_size": 64,
    "lr": 2e-3,
    "seed": 0,
    "decay_steps": 8,
}
SAMPLING = {"n": 50, "steps": 3, "step_size": 0.2, "start_std": 4.0, "record": [1, 3, 60]}


# ---------------------------------------------------------------- the NumPy reference, float64


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _activation(name, a):
    """(value, derivative) of softplus or silu."""
    if name == "softplus":
        return np.logaddexp(0.0, a), _sigmoid(a)
    s = _sigmoid(a)
    return a * s, s * (1.0 + a * (1.0 - s))


def numpy_score(network, weights, x, sigma=None, tangents=()):
    """s(x) or s(x, sigma) (sigma: (B, 1)), and for each input tangent t (B, D) the derivative
    of s along t (forward mode): J t, sample by sample."""
    spec = layout.NETWORKS[network]
    w = [np.asarray(a, np.float64) for a in weights]
    x = np.asarray(x, np.float64)
    scale = 1.0
    if sigma is not None:
        sigma = np.asarray(sigma, np.float64)
        if spec["sigma_data"] is not None:
            scale = 1.0 / np.sqrt(sigma**2 + spec["sigma_data"] ** 2)
        h = np.concatenate([x * scale, np.log(sigma)], axis=1)
        dh = [np.concatenate([t * scale, np.zeros_like(sigma)], axis=1) for t in tangents]
    else:
        h, dh = x, [np.asarray(t, np.float64) for t in tangents]
    layers = len(w) // 2
    for i in range(layers):
        a = h @ w[2 * i] + w[2 * i + 1]
        da = [t @ w[2 * i] for t in dh]
        if i < layers - 1:
            h, slope = _activation(spec["activation"], a)
            dh = [slope * t for t in da]
        else:
            h, dh = a, da
    if sigma is not None:
        h, dh = h / sigma, [t / sigma for t in dh]
    return h, dh


def numpy_figures(case, weights, x, draws):
    """The objective's figures for batch x with the given draws, in float64."""
    x = np.asarray(x, np.float64)
    if case["method"] == "dsm":
        sigma = np.asarray(case["sigmas"], np.float64)[draws["levels"]][:, None]
        z = np.asarray(draws["z"], np.float64)
        s, _ = numpy_score(case["network"], weights, x + sigma * z, sigma)
        return {"loss": np.mean(np.sum((sigma * s + z) ** 2, axis=1))}
    if case["divergence"] == "exact":
        units = [np.tile(np.eye(x.shape[1])[d], (len(x), 1)) for d in range(x.shape[1])]
        s, columns = numpy_score(case["network"], weights, x, tangents=units)
        div = sum(column[:, d] for d, column in enumerate(columns))
    else:
        probe = np.asarray(draws["probe"], np.float64)
        s, (jv,) = numpy_score(case["network"], weights, x, tangents=[probe])
        div = np.sum(probe * jv, axis=1)
    squared_norm, div = np.mean(np.sum(s**2, axis=1)), np.mean(div)
    return {"loss": squared_norm + 2.0 * div, "squared_norm": squared_norm, "divergence": div}


def _flat(weights):
    return np.concatenate([np.ravel(w) for w in weights]).astype(np.float64)


def _unflat(vector, like):
    out, i = [], 0
    for w in like:
        out.append(vector[i : i + w.size].reshape(w.shape))
        i += w.size
    return out


def _directional(case, weights, x, draws, direction, h=1e-6):
    flat = _flat(weights)
    plus = numpy_figures(case, _unflat(flat + h * direction, weights), x, draws)["loss"]
    minus = numpy_figures(case, _unflat(flat - h * direction, weights), x, draws)["loss"]
    return (plus - minus) / (2 * h)


def _sigma_column(case, n):
    return None if case["level"] is None else np.full((n, 1), case["sigmas"][case["level"]])


# ---------------------------------------------------------------- inputs and workers


@pytest.fixture(scope="module")
def inputs():
    """Per case: a real batch, Glorot-uniform weights and every draw, made once here with NumPy."""
    made = {}
    toy = toy_split().x_train[:BATCH]
    digits = digits_split().x_train[:16].reshape(16, -1)
    for i, (name, case) in enumerate(CASES.items()):
        x = digits if case["network"] == "digits" else toy
        rng = np.random.default_rng(100 + i)
        draws = None
        if case["method"] == "dsm":
            draws = {
                "levels": rng.integers(0, len(case["sigmas"]), size=len(x)),
                "z": rng.standard_normal(x.shape).astype(np.float32),
            }
        elif case["divergence"] == "hutchinson":
            draws = {"probe": rng.choice([-1.0, 1.0], size=x.shape).astype(np.float32)}
        xi = rng.standard_normal(x.shape).astype(np.float32)
        made[name] = (x, score_glorot_weights(case["network"], i), draws, xi)
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
    # The slowest workers first, so that the two at a time end together.
    slow_first = ("keras-jax", "keras-tensorflow", "flax", "tensorflow", "keras-torch", "torch")
    return sorted(selected, key=slow_first.index)


def _run_worker(job, folder):
    engine = job["engine"]
    job["output"] = str(folder / f"result-{engine}")
    path = folder / f"job-{engine}.json"
    path.write_text(json.dumps(job))
    env = dict(
        os.environ,
        KERAS_BACKEND=registry.KERAS_BACKEND[engine],
        TF_CPP_MIN_LOG_LEVEL="2",
        OMP_NUM_THREADS="1",
    )
    done = warm.run(
        [WORKER, str(path)], backend=env["KERAS_BACKEND"], env=env, cwd=ROOT, timeout=900
    )
    if done.returncode != 0:
        return {"failed": f"worker for {engine} exited {done.returncode}:\n{done.stderr[-4000:]}"}
    with open(job["output"] + ".json") as f:
        report = json.load(f)
    with np.load(job["output"] + ".npz", allow_pickle=False) as saved:
        report["arrays"] = {key: saved[key] for key in saved.files}
    return report


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, inputs):
    """engine -> its worker's report; the workers run two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("score-workers")
    arrays = {}
    for name, (x, weights, draws, xi) in inputs.items():
        arrays[f"{name}/x"], arrays[f"{name}/xi"] = x, xi
        arrays.update({f"{name}/w/{i}": w for i, w in enumerate(weights)})
        arrays.update({f"{name}/{k}": v for k, v in (draws or {}).items()})
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
                "sampling": SAMPLING,
            },
            folder,
        )
        for engine in _selected_engines(request.session)
    }

    yield reports_of(futures)
    pool.shutdown(wait=True)


# ---------------------------------------------------------------- the reference itself


def test_numpy_reference_divergence_is_the_jacobians_trace(inputs):
    """The forward-mode divergence against central differences of the score, and the sliced
    estimate's mean over all 2^D probes against the exact divergence (per sample: Rademacher
    probes make E[v J v] = tr J exactly)."""
    x, weights, _, _ = inputs["lecture_exact"]
    units = [np.tile(np.eye(2)[d], (len(x), 1)) for d in range(2)]
    _, columns = numpy_score("lecture", weights, x, tangents=units)
    h = 1e-6
    for d in range(2):
        plus, _ = numpy_score("lecture", weights, x + h * units[d])
        minus, _ = numpy_score("lecture", weights, x - h * units[d])
        np.testing.assert_allclose(columns[d], (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)
    exact = numpy_figures(CASES["lecture_exact"], weights, x, None)
    probes = [
        np.tile(np.array(p, float), (len(x), 1)) for p in ([1, 1], [1, -1], [-1, 1], [-1, -1])
    ]
    sliced = np.mean(
        [
            numpy_figures(CASES["lecture_hutchinson"], weights, x, {"probe": p})["loss"]
            for p in probes
        ]
    )
    assert sliced == pytest.approx(exact["loss"], rel=1e-12)
    assert exact["loss"] == pytest.approx(
        exact["squared_norm"] + 2 * exact["divergence"], rel=1e-12
    )


def test_numpy_reference_dsm_loss_is_tweedies_error():
    """With the exact score of a Gaussian N(0, v) data set, sigma s(x + sigma z) + z has mean
    zero given x + sigma z, and the loss is its irreducible part: D * v / (v + sigma^2)."""
    v, sigma, n = 0.3, 0.7, 200_000
    rng = np.random.default_rng(0)
    x = np.sqrt(v) * rng.standard_normal((n, 2))
    z = rng.standard_normal((n, 2))
    noisy = x + sigma * z
    s = -noisy / (v + sigma**2)
    loss = np.mean(np.sum((sigma * s + z) ** 2, axis=1))
    assert loss == pytest.approx(2 * v / (v + sigma**2), rel=0.01)


# ---------------------------------------------------------------- parity


def _relative(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def _grads(report, case):
    n = len(layout.canonical_shapes(CASES[case]["network"]))
    return [report["arrays"][f"{case}/grad/{i}"] for i in range(n)]


def _scale(case, inputs):
    """The size of the loss's terms (the lecture's |s|^2 and 2 div s can nearly cancel)."""
    x, weights, draws, _ = inputs[case]
    figures = numpy_figures(CASES[case], weights, x, draws)
    return max(
        abs(figures["loss"]),
        abs(figures.get("squared_norm", 0.0)),
        2 * abs(figures.get("divergence", 0.0)),
    )


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_objective_and_gradients_match_numpy(engine, case, results, inputs):
    x, weights, draws, xi = inputs[case]
    spec = CASES[case]
    expected = numpy_figures(spec, weights, x, draws)
    report = results(engine)
    got = report["parity"][case]
    assert got["weights_round_trip"], "get_weights() after set_weights() changed the weights"
    assert abs(got["loss"] - expected["loss"]) <= RTOL * _scale(case, inputs), (
        got["loss"],
        expected,
    )
    grads = _grads(report, case)
    layout.check_weights(spec["network"], grads)
    gradient = _flat(grads)
    norm = np.linalg.norm(gradient)
    assert norm > 1e-3
    # Along the gradient itself and along a random direction, the directional derivative is what
    # finite differences of the float64 forward pass give.
    random = np.random.default_rng(5).normal(size=gradient.shape)
    for direction in (gradient / norm, random / np.linalg.norm(random)):
        numeric = _directional(spec, weights, x, draws, direction)
        assert abs(numeric - gradient @ direction) <= RTOL * norm, (numeric, gradient @ direction)
    # The score, one Langevin step with the given noise, and the denoising step.
    arrays = report["arrays"]
    sigma = _sigma_column(spec, len(x))
    score, _ = numpy_score(spec["network"], weights, x, sigma)
    np.testing.assert_allclose(arrays[f"{case}/score"], score, rtol=1e-4, atol=1e-4)
    eps = spec["eps"]
    step = x + eps * score + np.sqrt(2 * eps * layout.TEMPERATURE) * xi
    np.testing.assert_allclose(arrays[f"{case}/step"], step, rtol=0, atol=1e-5)
    if spec["method"] == "dsm":
        last = np.full((len(x), 1), spec["sigmas"][-1])
        denoised = x + spec["sigmas"][-1] ** 2 * numpy_score(spec["network"], weights, x, last)[0]
        np.testing.assert_allclose(arrays[f"{case}/denoised"], denoised, rtol=0, atol=1e-5)
    if "evaluate" in got:
        # The exact objective has no draws: evaluate() over batches of 7, 7, 7, 3 must be the
        # plain means (each batch weighted by its size).
        for key in layout.FIGURES["lecture"]:
            assert got["evaluate"][key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    if "probe_check" in got:
        via_divergence, given = got["probe_check"]
        assert via_divergence == pytest.approx(given, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_engines_agree(case, results, inputs):
    """The six engines against each other: the same objective (its divergence included),
    gradients, score and Langevin step, 1e-4 relative."""
    reports = {engine: results(engine) for engine in registry.ENGINES}
    first = registry.ENGINES[0]
    base_loss, base = reports[first]["parity"][case]["loss"], _grads(reports[first], case)
    scale = _scale(case, inputs)
    for engine in registry.ENGINES[1:]:
        got = reports[engine]["parity"][case]["loss"]
        assert abs(got - base_loss) <= RTOL * scale, (engine, got, base_loss)
        for i, (g, b) in enumerate(zip(_grads(reports[engine], case), base)):
            assert _relative(g, b) <= RTOL, (engine, i, _relative(g, b))
        for what in ("score", "step"):
            a, b = (
                reports[engine]["arrays"][f"{case}/{what}"],
                reports[first]["arrays"][f"{case}/{what}"],
            )
            assert _relative(a, b) <= RTOL, (engine, what, _relative(a, b))


# ---------------------------------------------------------------- resume, repeat, sample


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_resumed_training_equals_uninterrupted_training(engine, results):
    report = results(engine)
    steps = TRAINING["n_train"] // TRAINING["batch_size"]
    assert report["state_meta"]["format"] == layout.STATE_FORMAT
    assert report["state_meta"]["sigmas"] == pytest.approx(TRAINING["sigmas"])
    assert report["state_step"] == steps  # Adam's step count (and the schedule's) travelled
    n = len(layout.canonical_shapes(TRAINING["network"]))
    expected_names = sorted(
        [f"{prefix}/{i}" for prefix in ("weights", "adam/m", "adam/v") for i in range(n)]
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
    assert len(a_keys) == 4 * n + 1  # weights, then the state
    for key in a_keys:
        assert np.array_equal(arrays[key], arrays["B" + key[1:]]), key
        assert np.array_equal(arrays[key], arrays["C" + key[1:]]), key
    assert report["seed_changes_weights"]


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_training_reports_running_means(engine, results):
    report = results(engine)
    for epoch in report["A"]:
        batches = epoch["batches"]
        assert len(batches) == TRAINING["n_train"] // TRAINING["batch_size"]
        assert all(set(b) == {"loss"} for b in batches)
        assert epoch["means"] == pytest.approx(batches[-1], rel=1e-6)
        # The loss is | sigma s + z |^2 summed over 2 dimensions: about 2 for a useless s.
        assert all(0.05 < b["loss"] < 20.0 for b in batches)
    # evaluate() draws the same levels and noise at every call: the same figures twice.
    assert report["A_evaluate"][0] == report["A_evaluate"][1]


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_sampling_is_seeded_and_records_frames(engine, results):
    arrays = results(engine)["arrays"]
    samples, frames = arrays["sample/seed0"], arrays["sample/seed0/frames"]
    n, levels = SAMPLING["n"], len(TRAINING["sigmas"])
    assert samples.shape == (n, 2) and np.isfinite(samples).all()
    assert frames.shape == (len(SAMPLING["record"]), n, 2)
    assert SAMPLING["record"][-1] == SAMPLING["steps"] * levels  # the last frame: the last step
    assert np.array_equal(samples, arrays["sample/seed0_again"])
    assert np.array_equal(frames, arrays["sample/seed0_again/frames"])
    assert not np.allclose(samples, arrays["sample/seed1"])
    # The samples are the last step's state, denoised.
    np.testing.assert_allclose(samples, arrays["sample/denoised_last_frame"], rtol=0, atol=1e-5)
    assert not np.allclose(frames[0], frames[1]) and not np.allclose(frames[1], frames[2])
    if engine.startswith("keras"):
        assert results(engine)["score_keeps_graph"] is False
