"""The classifier engines, number for number.

Each engine runs in its own process (tests/workers/classifier_worker.py), with the Keras backend
that customfit.registry.KERAS_BACKEND names for it. From the same canonical weights and the same
batch, every engine must give the loss and the gradients that a float64 NumPy forward and
backward pass (written here, sharing no code with any engine) gives. Each native engine must also
resume from its state() exactly, and repeat itself exactly under the same seed.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from worker_jobs import reports_of, run_worker, worker_path

from customfit import registry
from customfit.tasks.classifier import layout
from customfit.trainers import canonical
from customfit.data import digits_split, toy_split
from customfit.tasks.classifier.architectures import DIGITS_DEFAULT, DIGITS_LECTURE, TOY_MLP

WORKER = worker_path("classifier")
NATIVE = ("tensorflow", "torch", "flax")
RTOL = 1e-4  # float32 engines against float64 NumPy

CASES = {  # name: (layers, data, eval batch size: uneven, so evaluate must weight its batches)
    "toy": (TOY_MLP, toy_split, 12),
    "digits-default": (DIGITS_DEFAULT, digits_split, 12),
    "digits-lecture": (DIGITS_LECTURE, digits_split, 12),
}
BATCH = 32
TRAINING = {"layers": DIGITS_DEFAULT, "n_train": 256, "batch_size": 32, "lr": 1e-3, "seed": 0}


# ---------------------------------------------------------------- the NumPy reference, float64


def _patches(x, k, padding):
    pad = (k - 1) // 2 if padding == "same" else 0
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    return padded, pad, windows.transpose(0, 1, 2, 4, 5, 3)  # (N, H', W', k, k, C)


def numpy_reference(layers, weights, x, y):
    """(mean cross-entropy, gradients in canonical layout, probabilities), by hand."""
    assert all(layer[2] % 2 == 1 for layer in layers if layer[0] == "conv"), "odd kernels only"
    weights = [np.asarray(w, np.float64) for w in weights]
    h = np.asarray(x, np.float64)
    tape, index = [], 0
    for layer in layers:
        kind = layer[0]
        if kind == "dense":
            kernel, bias = weights[index], weights[index + 1]
            tape.append(("dense", index, h))
            h = h @ kernel + bias
            index += 2
        elif kind == "conv":
            kernel, bias = weights[index], weights[index + 1]
            padded, pad, patches = _patches(h, layer[2], layer[3])
            tape.append(("conv", index, (padded.shape, pad, patches)))
            h = np.einsum("nhwijc,ijco->nhwo", patches, kernel) + bias
            index += 2
        elif kind == "maxpool":
            s = layer[1]
            n, height, width, c = h.shape
            ho, wo = height // s, width // s
            blocks = (
                h[:, : ho * s, : wo * s]
                .reshape(n, ho, s, wo, s, c)
                .transpose(0, 1, 3, 5, 2, 4)
                .reshape(n, ho, wo, c, s * s)
            )
            first_max = np.eye(s * s)[blocks.argmax(-1)]
            tape.append(("maxpool", s, (h.shape, first_max)))
            h = blocks.max(-1)
        elif kind == "flatten":
            tape.append(("flatten", None, h.shape))
            h = h.reshape(len(h), -1)
        if kind in ("dense", "conv") and layer[-1] == "relu":
            tape.append(("relu", None, h > 0))
            h = np.maximum(h, 0.0)

    shifted = h - h.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -log_p[np.arange(n), y].mean()
    p = np.exp(log_p)

    grads = [None] * len(weights)
    d = (p - np.eye(p.shape[1])[y]) / n
    for kind, index, saved in reversed(tape):
        if kind == "relu":
            d = d * saved
        elif kind == "flatten":
            d = d.reshape(saved)
        elif kind == "maxpool":
            shape, first_max = saved
            s = index
            n_, ho, wo, c = d.shape
            spread = (first_max * d[..., None]).reshape(n_, ho, wo, c, s, s)
            full = np.zeros(shape)
            full[:, : ho * s, : wo * s] = spread.transpose(0, 1, 4, 2, 5, 3).reshape(
                n_, ho * s, wo * s, c
            )
            d = full
        elif kind == "dense":
            grads[index] = saved.T @ d
            grads[index + 1] = d.sum(axis=0)
            d = d @ weights[index].T
        elif kind == "conv":
            padded_shape, pad, patches = saved
            kernel = weights[index]
            k = kernel.shape[0]
            grads[index] = np.einsum("nhwijc,nhwo->ijco", patches, d)
            grads[index + 1] = d.sum(axis=(0, 1, 2))
            d_patches = np.einsum("nhwo,ijco->nhwijc", d, kernel)
            d_padded = np.zeros(padded_shape)
            ho, wo = d.shape[1:3]
            for i in range(k):
                for j in range(k):
                    d_padded[:, i : i + ho, j : j + wo] += d_patches[:, :, :, i, j]
            d = d_padded[:, pad : padded_shape[1] - pad, pad : padded_shape[2] - pad]
    return loss, grads, p


def test_numpy_reference_against_finite_differences():
    """The reference itself: its gradient along a random direction matches central differences."""
    rng = np.random.default_rng(7)
    for name, (layers, load, _) in CASES.items():
        x, y, weights = _case_inputs(name, layers, load)
        loss, grads, _ = numpy_reference(layers, weights, x, y)
        direction = [rng.normal(size=w.shape) for w in weights]
        norm = math.sqrt(sum(float(np.sum(v * v)) for v in direction))
        direction = [v / norm for v in direction]
        h = 1e-6  # small, so that no ReLU or max-pool kink lies within the step
        plus = numpy_reference(layers, [w + h * v for w, v in zip(weights, direction)], x, y)[0]
        minus = numpy_reference(layers, [w - h * v for w, v in zip(weights, direction)], x, y)[0]
        numeric = (plus - minus) / (2 * h)
        analytic = sum(float(np.sum(g * v)) for g, v in zip(grads, direction))
        assert abs(numeric - analytic) <= 1e-5 * abs(analytic) + 1e-9, (name, numeric, analytic)
        assert 0.5 < loss < 10.0, (name, loss)  # a random init gives a real, finite loss


# ---------------------------------------------------------------- inputs and workers


def _case_inputs(name, layers, load):
    """A real batch and random canonical weights (Glorot-uniform kernels, nonzero biases), made
    once here from NumPy, so every engine starts from exactly the same numbers."""
    split = load()
    x, y = split.x_train[:BATCH], split.y_train[:BATCH]
    rng = np.random.default_rng(list(CASES).index(name))
    weights = []
    for shape in layout.canonical_shapes(layers, split.input_shape, split.num_classes):
        if len(shape) == 1:
            weights.append(rng.normal(0.0, 0.1, size=shape).astype(np.float32))
        else:
            fan_in, fan_out = int(np.prod(shape[:-1])), shape[-1] * int(np.prod(shape[:-2]))
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
    return x, y, weights


def _selected_engines(session):
    """The engines whose tests in this module survived -k/-m, so only those workers start."""
    engines = set()
    for item in session.items:
        if item.module.__name__ != __name__:
            continue
        if item.originalname == "test_tensorflow_engine_refuses_another_keras_backend":
            engines.add("tensorflow@jax")
        elif hasattr(item, "callspec") and item.callspec.params.get("engine"):
            engines.add(item.callspec.params["engine"])
    return [e for e in (*registry.ENGINES, "tensorflow@jax") if e in engines]


def _run_worker(job, folder):
    backend = job.pop("keras_backend")
    return run_worker(WORKER, job, folder, backend, 420, one_thread=True)


@pytest.fixture(scope="module")
def inputs():
    return {name: _case_inputs(name, layers, load) for name, (layers, load, _) in CASES.items()}


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, inputs):
    """engine -> its worker's report; the workers run two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("classifier-workers")
    arrays = {}
    for name, (x, y, weights) in inputs.items():
        arrays[f"{name}/x"], arrays[f"{name}/y"] = x, y
        arrays.update({f"{name}/w/{i}": w for i, w in enumerate(weights)})
    np.savez(folder / "inputs.npz", **arrays)
    parity = [
        {
            "name": name,
            "layers": layers,
            "input_shape": list(inputs[name][0].shape[1:]),
            "num_classes": 5 if name == "toy" else 10,
            "eval_batch_size": eval_batch,
        }
        for name, (layers, _, eval_batch) in CASES.items()
    ]
    jobs = []
    for engine in _selected_engines(request.session):
        if engine == "tensorflow@jax":
            jobs.append({"engine": "tensorflow", "keras_backend": "jax", "construct_only": True})
            continue
        job = {
            "engine": engine,
            "keras_backend": registry.KERAS_BACKEND[engine],
            "inputs": str(folder / "inputs.npz"),
            "parity": parity,
        }
        if engine in NATIVE:
            job["training"] = TRAINING
        jobs.append(job)
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        ("tensorflow@jax" if job.get("construct_only") else job["engine"]): pool.submit(
            _run_worker, job, folder
        )
        for job in jobs
    }

    yield reports_of(futures)
    pool.shutdown(wait=True)


# ---------------------------------------------------------------- parity


def _relative(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_same_loss_and_gradients_as_numpy(engine, case, results, inputs):
    layers = CASES[case][0]
    x, y, weights = inputs[case]
    loss, grads, proba = numpy_reference(layers, weights, x, y)
    report = results(engine)
    got = report["parity"][case]
    assert got["weights_round_trip"], "get_weights() after set_weights() changed the weights"
    assert abs(got["loss"] - loss) <= RTOL * loss, (got["loss"], loss)
    assert got["n_grads"] == len(grads)
    for i, expected in enumerate(grads):
        grad = report["arrays"][f"{case}/grad/{i}"]
        assert grad.shape == expected.shape, (i, grad.shape, expected.shape)
        assert _relative(grad, expected) <= RTOL, (i, _relative(grad, expected))
    assert abs(got["evaluate"]["loss"] - loss) <= RTOL * loss, (got["evaluate"], loss)
    accuracy = float(np.mean(proba.argmax(axis=1) == y))
    assert got["evaluate"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    np.testing.assert_allclose(report["arrays"][f"{case}/proba"], proba, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- resume and repeat


def _batches_per_epoch():
    return math.ceil(TRAINING["n_train"] / TRAINING["batch_size"])


@pytest.mark.parametrize("engine", NATIVE)
def test_resumed_run_equals_uninterrupted_run(engine, results):
    report = results(engine)
    assert report["state_meta"]["format"] == canonical.STATE_FORMAT
    assert report["state_step"] == _batches_per_epoch()  # Adam's step count travelled
    assert report["state_kept"], "the arrays state() returned changed as training went on"
    assert report["C"][0]["batches"] == report["A"][1]["batches"]
    assert report["C"][0]["means"] == report["A"][1]["means"]
    arrays = report["arrays"]
    n = sum(1 for key in arrays if key.startswith("A/w/"))
    assert n == len(layout.canonical_shapes(DIGITS_DEFAULT, (8, 8, 1), 10))
    for i in range(n):
        difference = np.max(np.abs(arrays[f"C/w/{i}"] - arrays[f"A/w/{i}"]))
        assert difference <= 1e-7, (i, difference)


@pytest.mark.parametrize("engine", NATIVE)
def test_same_seed_same_history(engine, results):
    """D repeats A; B (which took a state() after its first epoch) also ends where A ends."""
    report = results(engine)
    a = report["A"]
    for run in ("D", "B"):
        assert len(report[run]) == len(a)
        for epoch_a, epoch in zip(a, report[run]):
            assert epoch["batches"] == epoch_a["batches"], run
            assert epoch["means"] == epoch_a["means"], run
    arrays = report["arrays"]
    for key in [k for k in arrays if k.startswith("A/w/")]:
        assert np.array_equal(arrays[key], arrays["D" + key[1:]]), key
        assert np.array_equal(arrays[key], arrays["B" + key[1:]]), key
    # ... and the seed matters: another seed gives another first epoch.
    assert report["E"][0]["batches"] != a[0]["batches"]


@pytest.mark.parametrize("engine", NATIVE)
def test_train_epoch_reports_running_means(engine, results):
    history = results(engine)["A"]
    for epoch in history:
        batches = epoch["batches"]
        assert len(batches) == _batches_per_epoch()
        assert all(isinstance(b[k], float) for b in batches for k in ("loss", "accuracy"))
        assert epoch["means"] == batches[-1]  # the epoch's means are the last running means
        assert all(0.0 <= b["accuracy"] <= 1.0 and b["loss"] > 0.0 for b in batches)
    assert history[1]["means"]["loss"] < history[0]["means"]["loss"]  # it learns


def test_tensorflow_engine_refuses_another_keras_backend(results):
    error = results("tensorflow@jax")["error"]
    assert error is not None and error["type"] == "RuntimeError"
    assert "KERAS_BACKEND=tensorflow" in error["message"] and "'jax'" in error["message"]
