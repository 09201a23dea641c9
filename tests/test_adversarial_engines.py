"""The adversarial attack on six engines, number for number.

Each engine runs in its own process (tests/workers/adversarial_worker.py), with the Keras backend
that customfit.registry.KERAS_BACKEND names for it, from the same canonical weights and the same
pairs (x, target). A float64 NumPy forward and backward pass, written here and sharing no code
with any engine, is the reference for the objective, its input gradient, and both attacks.

The weights are "trained-ish": Glorot-random convolutions with a dense read-out fitted by ridge
regression to one-hot labels (about 0.93 held out), so the outputs are confident and the input
gradients have the structure of a trained network's, not a random one's near-uniform softmax.

Tolerances, and why:
- objective value: 1e-5 relative (a float32 sum of 16 cross-entropies against float64);
- input gradient: rtol 1e-4 elementwise, with atol 1e-5 of the batch's largest entry, for
  entries that float32 rounding leaves near zero;
- 5 lecture steps: the final dx within LECTURE_ATOL (below) of the reference; each step moves
  dx by LECTURE_STEP * g, so the gradient's 1e-4 relative error, compounded over 5 steps through
  the network's curvature, stays orders below the perturbation itself;
- pgd: sign(g) is discontinuous, so float32 and float64 agree on the update exactly except where
  |g| is within rounding of zero. A pixel whose reference gradient is below TIE (relative to its
  pair's largest) is a tie: an engine may step it either way, and that pair's later steps then
  legitimately differ. Every other pixel must step exactly as the reference says, each engine's
  attack() must end exactly where its own gradients lead by the rules, and pairs that saw a tie
  (counted, at most MAX_TIED_PAIRS) are the only ones whose final x_adv may differ.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from worker_jobs import reports_of, run_worker, worker_path

from customfit import registry
from customfit.tasks.classifier import layout
from customfit.data import digits_split
from customfit.tasks.adversarial import rules
from customfit.tasks.classifier.architectures import DIGITS_DEFAULT

WORKER = worker_path("adversarial")
LAYERS = DIGITS_DEFAULT
PAIRS = 16
STEPS = 5
EPS = 0.1
VALUE_RTOL = 1e-5
GRAD_RTOL = 1e-4
GRAD_ATOL = 1e-5  # times the largest |g| in the batch
LECTURE_ATOL = 1e-5  # on dx, whose entries reach ~0.1 after 5 steps here
TIE = 1e-4  # |g| below TIE * max|g| of its pair: float32 may give it either sign
MAX_TIED_PAIRS = 2


# ---------------------------------------------------------------- the NumPy reference, float64


def _patches(h, k, padding):
    pad = (k - 1) // 2 if padding == "same" else 0
    padded = np.pad(h, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    return padded.shape, pad, windows.transpose(0, 1, 2, 4, 5, 3)  # (N, H', W', k, k, C)


def forward(layers, weights, x):
    """Logits, and the tape that backward() needs."""
    h, tape, index = np.asarray(x, np.float64), [], 0
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            kernel, bias = weights[index], weights[index + 1]
            padded_shape, pad, patches = _patches(h, layer[2], layer[3])
            n, ho, wo = patches.shape[:3]
            h = (patches.reshape(n * ho * wo, -1) @ kernel.reshape(-1, kernel.shape[-1])).reshape(
                n, ho, wo, -1
            ) + bias
            tape.append(("conv", index, (padded_shape, pad)))
            index += 2
        elif kind == "dense":
            tape.append(("dense", index, None))
            h = h @ weights[index] + weights[index + 1]
            index += 2
        elif kind == "maxpool":
            s = layer[1]
            n, height, width, c = h.shape
            blocks = (
                h[:, : height // s * s, : width // s * s]
                .reshape(n, height // s, s, width // s, s, c)
                .transpose(0, 1, 3, 5, 2, 4)
                .reshape(n, height // s, width // s, c, s * s)
            )
            tape.append(("maxpool", s, (h.shape, np.eye(s * s)[blocks.argmax(-1)])))
            h = blocks.max(-1)
        elif kind == "flatten":
            tape.append(("flatten", None, h.shape))
            h = h.reshape(len(h), -1)
        if kind in ("conv", "dense") and layer[-1] == "relu":
            tape.append(("relu", None, h > 0))
            h = np.maximum(h, 0.0)
    return h, tape


def backward(weights, tape, d):
    """The gradient with respect to the network's input, given d = d objective / d logits."""
    for kind, index, saved in reversed(tape):
        if kind == "relu":
            d = d * saved
        elif kind == "flatten":
            d = d.reshape(saved)
        elif kind == "dense":
            d = d @ weights[index].T
        elif kind == "maxpool":
            shape, first_max = saved
            s = index
            n, ho, wo, c = d.shape
            spread = (first_max * d[..., None]).reshape(n, ho, wo, c, s, s)
            full = np.zeros(shape)
            full[:, : ho * s, : wo * s] = spread.transpose(0, 1, 4, 2, 5, 3).reshape(
                n, ho * s, wo * s, c
            )
            d = full
        elif kind == "conv":
            padded_shape, pad = saved
            kernel = weights[index]
            k = kernel.shape[0]
            d_patches = np.einsum("nhwo,ijco->nhwijc", d, kernel)
            d_padded = np.zeros(padded_shape)
            ho, wo = d.shape[1:3]
            for i in range(k):
                for j in range(k):
                    d_padded[:, i : i + ho, j : j + wo] += d_patches[:, :, :, i, j]
            d = d_padded[:, pad : padded_shape[1] - pad, pad : padded_shape[2] - pad]
    return d


def objective_and_grad(weights, x, dx, target, method):
    """rules.py's batch objective (a sum over pairs) and its gradient w.r.t. dx, in float64."""
    dx = np.asarray(dx, np.float64)
    logits, tape = forward(LAYERS, weights, np.asarray(x, np.float64) + dx)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(target))
    value = -log_p[rows, target].sum()
    grad = backward(weights, tape, np.exp(log_p) - np.eye(logits.shape[1])[target])
    if method == "lecture":
        pixels = dx[0].size
        value += rules.LECTURE_C * np.abs(dx).reshape(len(dx), -1).mean(axis=1).sum()
        grad = grad + rules.LECTURE_C * np.sign(dx) / pixels  # sign(0) = 0, as rules.py says
    return value, grad


def reference_attack(weights, x, target, method):
    """The attack by rules.py, with float64 gradients and float32 updates (as the engines do):
    (the dx before each step and after the last, the gradient at each step)."""
    dx, trajectory, grads = np.zeros_like(x), [np.zeros_like(x)], []
    alpha = np.float32(rules.pgd_step_size(EPS, STEPS))
    for _ in range(STEPS):
        _, grad = objective_and_grad(weights, x, dx, target, method)
        if method == "pgd":
            dx = np.clip(
                dx - alpha * np.sign(grad).astype(np.float32), -np.float32(EPS), np.float32(EPS)
            )
        else:
            dx = dx - np.float32(rules.LECTURE_STEP) * grad.astype(np.float32)
        dx = np.clip(x + dx, 0.0, 1.0) - x
        trajectory.append(dx)
        grads.append(grad)
    return np.stack(trajectory), np.stack(grads)


def test_reference_gradient_against_finite_differences(case):
    """The reference itself: its gradient along random directions matches central differences."""
    weights, x, dx, target = case
    rng = np.random.default_rng(3)
    for method in rules.METHODS:
        _, grad = objective_and_grad(weights, x, dx, target, method)
        for _ in range(3):
            v = rng.normal(size=x.shape)
            # L1's kinks sit where dx = 0: move only pixels away from them, so that the central
            # difference sees one smooth piece (h is far too small to reach a ReLU kink).
            v[dx == 0] = 0.0
            h = 1e-6
            plus = objective_and_grad(weights, x, dx + h * v, target, method)[0]
            minus = objective_and_grad(weights, x, dx - h * v, target, method)[0]
            numeric, analytic = (plus - minus) / (2 * h), float(np.sum(grad * v))
            assert abs(numeric - analytic) <= 1e-5 * abs(analytic), (method, numeric, analytic)


# ---------------------------------------------------------------- inputs and workers


def _forward_features(weights, x):
    return forward(LAYERS[:-1], weights, x)[0]


@pytest.fixture(scope="module")
def case():
    """(canonical weights, x, dx, target): 16 held-out digits, each with a wrong target, and a
    perturbation dx for the parity hook, a third of whose entries are exactly 0 (where |dx| has
    its kink) and the rest such that x + dx stays in [0, 1]."""
    split = digits_split()
    rng = np.random.default_rng(0)
    weights = []
    for shape in layout.canonical_shapes(LAYERS, split.input_shape, split.num_classes):
        if len(shape) == 1:
            weights.append(rng.normal(0.0, 0.1, size=shape).astype(np.float32))
        else:
            fan_in, fan_out = int(np.prod(shape[:-1])), shape[-1] * int(np.prod(shape[:-2]))
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
    # The read-out, fitted by ridge regression on the random features of 500 training digits.
    features = _forward_features(weights, split.x_train[:500])
    features = np.c_[features, np.ones(len(features))]
    wanted = 8.0 * (np.eye(10)[split.y_train[:500]] - 0.1)
    readout = np.linalg.solve(
        features.T @ features + 1e-2 * np.eye(features.shape[1]), features.T @ wanted
    )
    weights[-2], weights[-1] = readout[:-1].astype(np.float32), readout[-1].astype(np.float32)

    x = split.x_test[:PAIRS]
    target = ((split.y_test[:PAIRS] + 1 + np.arange(PAIRS) % 9) % 10).astype(np.int64)
    dx = rng.uniform(-0.1, 0.1, size=x.shape).astype(np.float32)
    dx[rng.random(size=x.shape) < 1 / 3] = 0.0
    dx = np.clip(x + dx, 0.0, 1.0) - x
    return weights, x, dx, target


def test_case_is_trained_ish(case):
    weights, x, dx, target = case
    split = digits_split()
    logits = forward(LAYERS, weights, split.x_test)[0]
    assert np.mean(logits.argmax(axis=1) == split.y_test) > 0.85
    _, grad = objective_and_grad(weights, x, dx, target, "pgd")
    assert np.all(np.abs(grad).reshape(PAIRS, -1).max(axis=1) > 1e-2)  # no pair is flat


# JAX compiles a program per batch shape, which makes its workers the slowest: start them first,
# one on each core.
START_ORDER = ("flax", "keras-jax", "tensorflow", "keras-tensorflow", "torch", "keras-torch")


def _selected_engines(session):
    engines = {
        item.callspec.params["engine"]
        for item in session.items
        if item.module.__name__ == __name__
        and hasattr(item, "callspec")
        and "engine" in item.callspec.params
    }
    assert set(START_ORDER) == set(registry.ENGINES)
    return [e for e in START_ORDER if e in engines]


def _run_worker(engine, folder):
    job = {
        "engine": engine,
        "inputs": str(folder / "inputs.npz"),
        "layers": LAYERS,
        "steps": STEPS,
        "eps": EPS,
    }
    return run_worker(WORKER, job, folder, registry.KERAS_BACKEND[engine], 300, one_thread=True)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, case):
    """engine -> its worker's report; the workers run two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("adversarial-workers")
    weights, x, dx, target = case
    np.savez(
        folder / "inputs.npz",
        x=x,
        dx=dx,
        target=target,
        **{f"w/{i}": w for i, w in enumerate(weights)},
    )
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        engine: pool.submit(_run_worker, engine, folder)
        for engine in _selected_engines(request.session)
    }

    yield reports_of(futures)
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def reference(case):
    weights, x, _, target = case
    return {method: reference_attack(weights, x, target, method) for method in rules.METHODS}


# ---------------------------------------------------------------- parity


def _assert_grad_close(got, expected, what):
    assert got.shape == expected.shape and got.dtype == np.float32, (what, got.shape, got.dtype)
    np.testing.assert_allclose(
        got, expected, rtol=GRAD_RTOL, atol=GRAD_ATOL * np.abs(expected).max(), err_msg=what
    )


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_objective_and_input_gradient(engine, results, case):
    weights, x, dx, target = case
    report = results(engine)
    arrays = report["arrays"]
    assert report["weights_kept"] and report["weights_kept_after_attack"]
    for method in rules.METHODS:
        value, grad = objective_and_grad(weights, x, dx, target, method)
        assert abs(report[f"value/{method}"] - value) <= VALUE_RTOL * value, (method, value)
        _assert_grad_close(arrays[f"grad/{method}"], grad, method)
    # Where every attack starts: |dx|'s subgradient at 0 is 0 on every engine (JAX's abs says 1).
    value, grad = objective_and_grad(weights, x, np.zeros_like(x), target, "lecture")
    assert abs(report["value0/lecture"] - value) <= VALUE_RTOL * value
    _assert_grad_close(arrays["grad0/lecture"], grad, "lecture at dx = 0")


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_lecture_steps(engine, results, case, reference):
    _, x, _, _ = case
    arrays = results(engine)["arrays"]
    expected = x + reference["lecture"][0][-1]
    moved = np.abs(reference["lecture"][0][-1]).max()
    assert moved > 100 * LECTURE_ATOL, moved  # the steps go somewhere worth comparing
    # attack() ran in two batches of 8 (see the worker): a step that depended on the batch
    # (a mean over pairs instead of a sum) would miss the reference by far more than LECTURE_ATOL.
    for what in ("attack/lecture", "replay/lecture/dx"):
        got = arrays[what] if what.startswith("attack") else x + arrays[what][-1]
        assert got.dtype == np.float32 and got.shape == x.shape, what
        assert got.min() >= 0.0 and got.max() <= 1.0, what
        np.testing.assert_allclose(got, expected, rtol=0, atol=LECTURE_ATOL, err_msg=what)


def _ties(grads):
    """Per step and pixel: is |g| within TIE of zero, relative to its pair's largest |g|?"""
    scale = np.abs(grads).reshape(*grads.shape[:2], -1).max(axis=2)[:, :, None, None, None]
    return np.abs(grads) <= TIE * scale


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_pgd_steps(engine, results, case, reference):
    _, x, _, _ = case
    arrays = results(engine)["arrays"]
    x_adv = arrays["attack/pgd"]
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() >= EPS - 1e-6  # it reached the ball's edge

    # Step by step, the engine's own gradients against the reference's at the engine's own dx:
    # the signs agree except on ties.
    dxs, grads = arrays["replay/pgd/dx"], arrays["replay/pgd/grad"]
    weights, _, _, target = case
    tied_pairs = np.zeros(PAIRS, bool)
    for k in range(STEPS):
        _, expected = objective_and_grad(weights, x, dxs[k], target, "pgd")
        ties = _ties(expected[None])[0]
        flips = np.sign(grads[k]) != np.sign(expected)
        assert not np.any(flips & ~ties), f"step {k}: sign(g) differs where |g| is not near 0"
        tied_pairs |= (flips & ties).reshape(PAIRS, -1).any(axis=1)
    # Pairs on which the reference itself, or this engine, met a tie on the way may part ways.
    reference_dx, reference_grads = reference["pgd"]
    tied_pairs |= _ties(reference_grads).reshape(STEPS, PAIRS, -1).any(axis=(0, 2))
    tied_pairs |= _ties(grads).reshape(STEPS, PAIRS, -1).any(axis=(0, 2))
    assert tied_pairs.sum() <= MAX_TIED_PAIRS, tied_pairs.sum()
    clean = ~tied_pairs
    # Everywhere else: the reference's steps, exactly, both through attack() and by replay.
    for what, got in (("replay", x + dxs[-1]), ("attack", x_adv)):
        np.testing.assert_allclose(
            got[clean], (x + reference_dx[-1])[clean], rtol=0, atol=1e-6, err_msg=what
        )


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_unknown_method_is_refused(engine, results):
    message = results(engine)["bad_method"]
    assert message is not None and "'fgsm'" in message and "pgd" in message and "lecture" in message
