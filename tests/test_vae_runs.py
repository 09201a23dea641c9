"""`customfit run vae` end to end, one process per run (a Keras backend is fixed per process).

Default: a short run (4 epochs) per engine, checking what it writes and that its figures are
sane; the lecture model for one epoch; a run killed with SIGKILL as its 3rd epoch starts and
resumed with --resume, on one native and one Keras engine, ending exactly where the short run of
the same settings ends (weights, Adam's state, history).
Slow: the default model at full strength on every engine, against the bars.
"""

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import cli_runs
import numpy as np
import pytest
from history_helpers import read_history_csv

from customfit import checkpoint, registry
from customfit.tasks.vae import layout, spec

SHORT = 4
RESUMED = ("torch", "keras-jax")
FILES = [
    "checkpoint.safetensors",
    "curves.png",
    "history.csv",
    "metrics.json",
    "reconstructions.png",
    "samples.npy",
    "samples.png",
    "temperatures.png",
]
COLUMNS = ["epoch", *layout.FIGURES, *[f"val_{k}" for k in layout.FIGURES], "seconds"]


def _run(engine, out, *flags, timeout=900):
    return cli_runs.run("vae", engine, out, *flags, timeout=timeout)


def _killed_and_resumed(engine, folder):
    return cli_runs.killed_and_resumed("vae", engine, folder, SHORT)


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """Every run this module's default tests read, two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("vae-runs")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        engine: pool.submit(_run, engine, str(folder / engine), "--epochs", str(SHORT))
        for engine in registry.ENGINES
    }
    futures["lecture"] = pool.submit(
        _run, "torch", str(folder / "lecture"), "--model", "lecture", "--epochs", "1"
    )
    for engine in RESUMED:
        futures[f"resume-{engine}"] = pool.submit(_killed_and_resumed, engine, folder)

    def get(name):
        return futures[name].result()

    yield folder, get
    pool.shutdown(wait=True)


def _ok(result):
    assert result["returncode"] == 0, result["stderr"]
    return result


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_a_short_run_writes_its_files_and_sane_figures(engine, short_runs):
    folder, get = short_runs
    result = _ok(get(engine))
    out = folder / engine
    assert sorted(os.listdir(out)) == FILES
    for png in FILES:
        if png.endswith(".png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (1000, 8, 8) and samples.dtype == np.float32
    assert 0.0 <= samples.min() and samples.max() <= 1.0 and samples.std() > 0.01
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == {
        "epochs": SHORT,
        "batch_size": 64,
        "lr": 0.001,
        "seed": 0,
        "model": "default",
        "data": "built-in",
        "temperature": 0.1,
        "latent": 8,
    }
    assert metrics["bar"] == {"fd": ["<=", spec.PIXEL_GAUSSIAN_FD], "confidence": 0.85}
    assert 0.0 < metrics["fd"] < 500.0 and 0.1 <= metrics["confidence"] <= 1.0
    assert 0.0 <= metrics["coverage"] <= 1.0
    history = read_history_csv(out / "history.csv")
    assert list(history[0]) == COLUMNS and [row["epoch"] for row in history] == list(
        range(1, SHORT + 1)
    )
    assert history[-1]["loss"] < history[0]["loss"]  # it learns
    # The judge's negative ELBO (NumPy, from encode()/decode(), 10 draws per image) and the
    # trainer's own held-out figures (evaluate(), one draw): the KL term has no noise in it.
    last = history[-1]
    assert metrics["kl"] == pytest.approx(last["val_kl"], rel=1e-4, abs=1e-5)
    assert metrics["neg_elbo"] == pytest.approx(last["val_neg_elbo"], abs=1.0)
    assert metrics["temperature"] == metrics["effective_temperature"] == 0.1
    assert metrics["latent"] == 8 and 0 <= metrics["active_latents"] <= 8
    assert "fd" in result["stdout"] and "confidence" in result["stdout"]
    references = metrics["references"]
    assert references["pixel Gaussian"]["fd"] == pytest.approx(7.3257, abs=1e-4)
    assert references["real training digits"]["fd"] == pytest.approx(1.0705, abs=1e-4)
    assert references["the lecture's VAE (keras-tensorflow, seed 0)"] == spec.LECTURE_FIGURES
    assert "beside it, pixel Gaussian: fd 7.3257, confidence 0.8277" in result["stdout"]


def test_the_lecture_model_runs_with_its_own_settings(short_runs):
    folder, get = short_runs
    _ok(get("lecture"))
    metrics = json.loads((folder / "lecture" / "metrics.json").read_text())
    assert metrics["config"] == {
        "epochs": 1,
        "batch_size": 16,
        "lr": 0.001,
        "seed": 0,
        "model": "lecture",
        "data": "built-in",
        "temperature": 0.01,
        "latent": 10,
    }
    assert metrics["effective_temperature"] == pytest.approx(0.064)
    assert np.isfinite(metrics["neg_elbo"]) and np.isfinite(
        metrics["neg_elbo_at_effective_temperature"]
    )
    history = read_history_csv(folder / "lecture" / "history.csv")
    row = history[0]
    # The lecture's means: loss = mean KL term + mean squared error / (2T), 1/latent and 1/64 of
    # the per-image sums that make the negative ELBO.
    T = 0.01
    assert row["val_neg_elbo"] == pytest.approx(
        10 * row["val_kl"] + 64 * row["val_reconstruction"] + 32 * np.log(2 * np.pi * T), rel=1e-5
    )


@pytest.mark.parametrize("engine", RESUMED)
def test_a_killed_run_resumes_to_where_an_uninterrupted_run_ends(engine, short_runs):
    folder, get = short_runs
    state = get(f"resume-{engine}")
    assert state["killed"]["returncode"] == -signal.SIGKILL, state["killed"]
    # Killed one step into epoch 3, so the checkpoint holds epoch 2.
    assert state["killed_epoch"] == 2
    assert not state["metrics_before_resume"]
    assert state["history_rows"] == state["killed_epoch"]
    resumed = _ok(state["resumed"])
    assert f"resumed after epoch {state['killed_epoch']}" in resumed["stdout"]
    _ok(get(engine))
    straight, killed = folder / engine, folder / f"killed-{engine}"
    a_arrays, a_meta = checkpoint.load(str(straight / "checkpoint.safetensors"))
    r_arrays, r_meta = checkpoint.load(str(killed / "checkpoint.safetensors"))
    numbers = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa: E731
    assert numbers(r_meta["history"]) == numbers(a_meta["history"])
    assert sorted(r_arrays) == sorted(a_arrays)
    assert "adam/step" in a_arrays and int(a_arrays["adam/step"]) == SHORT * 23
    for name in a_arrays:  # weights and the optimizer's state, bit for bit
        np.testing.assert_array_equal(r_arrays[name], a_arrays[name], err_msg=name)
    m_straight = json.loads((straight / "metrics.json").read_text())
    m_resumed = json.loads((killed / "metrics.json").read_text())
    for key in ("fd", "confidence", "coverage", "neg_elbo"):
        assert m_resumed[key] == m_straight[key], key
    assert np.array_equal(np.load(straight / "samples.npy"), np.load(killed / "samples.npy"))
    assert m_resumed["resumed_from_epoch"] == state["killed_epoch"]


# ---------------------------------------------------------------- full strength


@pytest.fixture(scope="module")
def full_runs(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae-full")
    engines = [
        item.callspec.params["engine"]
        for item in request.session.items
        if item.module.__name__ == __name__
        and item.originalname == "test_default_model_clears_the_bars"
    ]
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        engine: pool.submit(_run, engine, str(folder / engine), timeout=1800)
        for engine in dict.fromkeys(engines)
    }
    yield folder, lambda engine: futures[engine].result()
    pool.shutdown(wait=True)


@pytest.mark.slow
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_default_model_clears_the_bars(engine, full_runs):
    folder, get = full_runs
    _ok(get(engine))
    metrics = json.loads((folder / engine / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == spec.DEFAULTS["epochs"]
    print(
        f"{engine}: fd {metrics['fd']:.3f}, confidence {metrics['confidence']:.3f}, coverage "
        f"{metrics['coverage']:.3f}, neg_elbo {metrics['neg_elbo']:.2f}, "
        f"{metrics['total_seconds']:.0f} s"
    )
    assert metrics["fd"] <= spec.PIXEL_GAUSSIAN_FD, metrics["fd"]
    assert metrics["confidence"] >= 0.85, metrics["confidence"]
    assert metrics["passed"] is True
    # A trained VAE: a negative ELBO far below the untrained model's (about +40 nats), and more
    # than half of its latent dimensions in use.
    assert metrics["neg_elbo"] < 5.0 and metrics["active_latents"] >= 4
