"""`customfit run score` and `customfit run score-digits` end to end, one process per run (a Keras
backend is fixed per process).

Default: a short dsm run per engine (3 epochs, one Langevin step a level, 300 samples), checking
what it writes and that its figures are sane; the lecture's method for one epoch on
keras-tensorflow (its divergence through cf.ops.divergence, with a partial last batch); a
score-digits run of one epoch; a run killed with SIGKILL as its 3rd epoch starts and resumed
with --resume, on one native and one Keras engine, ending exactly where the short run ends.
Slow: both methods and score-digits at full strength on every engine, against the bars.
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
from customfit.tasks.score import layout, spec
from customfit.tasks.score_digits import spec as digits_spec

SHORT = 3
QUICK = ["--sampling-steps", "1", "--samples", "300"]
RESUMED = ("torch", "keras-jax")
FILES = [
    "checkpoint.safetensors",
    "curves.png",
    "history.csv",
    "langevin.gif",
    "metrics.json",
    "samples.npy",
    "samples.png",
    "score_field.png",
]


_run = cli_runs.run


def _killed_and_resumed(engine, folder):
    return cli_runs.killed_and_resumed("score", engine, folder, SHORT, *QUICK)


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """Every run this module's default tests read, two at a time (the machine has 2 cores)."""
    folder = tmp_path_factory.mktemp("score-runs")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {}
    for engine in RESUMED:
        futures[f"resume-{engine}"] = pool.submit(_killed_and_resumed, engine, folder)
    for engine in registry.ENGINES:
        futures[engine] = pool.submit(
            _run, "score", engine, str(folder / engine), "--epochs", str(SHORT), *QUICK
        )
    futures["lecture"] = pool.submit(
        _run,
        "score",
        "keras-tensorflow",
        str(folder / "lecture"),
        "--method",
        "lecture",
        "--epochs",
        "1",
        "--samples",
        "300",
        "--sampling-steps",
        "5",
        "--batch-size",
        "128",
        "--lr",
        "0.01",
    )
    futures["digits"] = pool.submit(
        _run,
        "score-digits",
        "torch",
        str(folder / "digits"),
        "--epochs",
        "1",
        "--sampling-steps",
        "1",
        "--noise-levels",
        "5",
    )

    def get(name):
        return futures[name].result()

    yield folder, get
    pool.shutdown(wait=True)


def _ok(result):
    assert result["returncode"] == 0, result["stderr"]
    return result


def _gif_frames(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.n_frames


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_a_short_run_writes_its_files_and_sane_figures(engine, short_runs):
    folder, get = short_runs
    result = _ok(get(engine))
    out = folder / engine
    assert sorted(os.listdir(out)) == FILES
    for png in FILES:
        if png.endswith(".png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # 20 levels of one step: 20 frames, then the denoised samples.
    assert _gif_frames(out / "langevin.gif") == 21
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (300, 2) and samples.dtype == np.float32 and np.isfinite(samples).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == {
        "epochs": SHORT,
        "batch_size": 512,
        "lr": 0.002,
        "seed": 0,
        "model": "default",
        "data": "built-in",
        "method": "dsm",
        "divergence": None,
        "sampling_steps": 1,
        "samples": 300,
        "step_size": 0.2,
        "noise_levels": 20,
        "sigma_max": 4.0,
        "sigma_min": 0.05,
    }
    assert metrics["bar"] == {
        k: list(v) if isinstance(v, tuple) else v for k, v in spec.bars({"method": "dsm"}).items()
    }
    assert metrics["headline"] == "energy_distance"
    assert 0.0 < metrics["energy_distance"] < 5.0 and 0.0 < metrics["energy_distance_10x"] < 5.0
    assert 0.0 < metrics["data_energy_distance"] < 0.02  # 300 fresh points: the floor
    for suffix in ("", "_10x"):
        assert 0.0 <= metrics[f"within_3sigma{suffix}"] <= 1.0
        assert sum(metrics[f"cluster_shares{suffix}"]) == pytest.approx(1.0)
        assert metrics[f"cluster_share_min{suffix}"] <= 0.2 <= metrics[f"cluster_share_max{suffix}"]
    assert metrics["sampling_steps_10x"] == 10
    history = read_history_csv(out / "history.csv")
    assert list(history[0]) == ["epoch", "loss", "val_loss", "seconds"]
    assert [row["epoch"] for row in history] == list(range(1, SHORT + 1))
    # | sigma s + z |^2 over 2 dimensions: 2 for s = 0, less once it learns.
    assert all(0.1 < row["loss"] < 3.0 and 0.1 < row["val_loss"] < 3.0 for row in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert "energy_distance" in result["stdout"]


def test_the_lecture_method_trains_through_cf_ops_divergence(short_runs):
    """keras-tensorflow, the lecture's rate: 3000 points in batches of 128 leave a partial last batch, whose dynamic
    batch size cf.ops.divergence must take inside TensorFlow's graph."""
    folder, get = short_runs
    _ok(get("lecture"))
    out = folder / "lecture"
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert (
        config["method"],
        config["divergence"],
        config["sampling_steps"],
        config["step_size"],
    ) == ("lecture", "exact", 5, 0.01)
    assert config["noise_levels"] is None and config["sigma_max"] is None
    assert metrics["bar"] == {"energy_distance": ["<=", 0.15]}
    assert metrics["sampling_steps_10x"] == 50
    assert _gif_frames(out / "langevin.gif") == 5
    history = read_history_csv(out / "history.csv")
    assert list(history[0]) == [
        "epoch",
        *layout.FIGURES["lecture"],
        *[f"val_{k}" for k in layout.FIGURES["lecture"]],
        "seconds",
    ]
    row = history[0]
    for prefix in ("", "val_"):
        assert row[f"{prefix}loss"] == pytest.approx(
            row[f"{prefix}squared_norm"] + 2 * row[f"{prefix}divergence"], rel=1e-4, abs=1e-5
        )
    # The lecture's loss goes negative as soon as s learns to point inward (div s < 0).
    assert row["divergence"] < 0 and row["loss"] < 0


def test_score_digits_writes_digits_in_the_unit_interval(short_runs):
    folder, get = short_runs
    result = _ok(get("digits"))
    out = folder / "digits"
    assert sorted(os.listdir(out)) == [
        "checkpoint.safetensors",
        "curves.png",
        "history.csv",
        "langevin.gif",
        "metrics.json",
        "samples.npy",
        "samples.png",
    ]
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (1000, 8, 8) and samples.dtype == np.float32
    assert 0.0 <= samples.min() and samples.max() <= 1.0
    assert _gif_frames(out / "langevin.gif") == 6  # 5 levels, then the samples
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bar"] == {"fd": ["<=", digits_spec.PIXEL_GAUSSIAN_FD]}
    assert metrics["config"]["noise_levels"] == 5 and metrics["config"]["sigma_max"] == 5.0
    assert np.isfinite(metrics["fd"]) and 0.0 <= metrics["confidence"] <= 1.0
    assert "fd" in result["stdout"]


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
    assert "resumed after epoch 2" in resumed["stdout"]
    _ok(get(engine))
    straight, killed = folder / engine, folder / f"killed-{engine}"
    a_arrays, a_meta = checkpoint.load(str(straight / "checkpoint.safetensors"))
    r_arrays, r_meta = checkpoint.load(str(killed / "checkpoint.safetensors"))
    numbers = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa: E731
    assert numbers(r_meta["history"]) == numbers(a_meta["history"])
    assert sorted(r_arrays) == sorted(a_arrays)
    assert int(a_arrays["adam/step"]) == SHORT * 6  # 3000 points in batches of 512
    for name in a_arrays:  # weights and the optimizer's state, bit for bit
        np.testing.assert_array_equal(r_arrays[name], a_arrays[name], err_msg=name)
    m_straight = json.loads((straight / "metrics.json").read_text())
    m_resumed = json.loads((killed / "metrics.json").read_text())
    for key in ("energy_distance", "energy_distance_10x", "within_3sigma", "cluster_shares"):
        assert m_resumed[key] == m_straight[key], key
    assert np.array_equal(np.load(straight / "samples.npy"), np.load(killed / "samples.npy"))


# ---------------------------------------------------------------- full strength


FULL = {
    "dsm": ("score", "--method", "dsm"),
    "lecture": ("score", "--method", "lecture"),
    "digits": ("score-digits",),
}


@pytest.fixture(scope="module")
def full_runs(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("score-full")
    wanted = [
        (item.originalname, item.callspec.params["engine"])
        for item in request.session.items
        if item.module.__name__ == __name__ and item.originalname.startswith("test_full_")
    ]
    kinds = {
        "test_full_dsm_clears_the_bars": "dsm",
        "test_full_lecture_clears_its_bar_and_drifts": "lecture",
        "test_full_score_digits_beats_the_pixel_gaussian": "digits",
    }
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {}
    for name, engine in dict.fromkeys(wanted):
        kind = kinds[name]
        task, *flags = FULL[kind]
        futures[kind, engine] = pool.submit(
            _run, task, engine, str(folder / f"{kind}-{engine}"), *flags, timeout=3600
        )

    def get(kind, engine):
        _ok(futures[kind, engine].result())
        return json.loads((folder / f"{kind}-{engine}" / "metrics.json").read_text())

    yield get
    pool.shutdown(wait=True)


def _shares(metrics, suffix=""):
    return " ".join(f"{s:.3f}" for s in metrics[f"cluster_shares{suffix}"])


@pytest.mark.slow
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_full_dsm_clears_the_bars(engine, full_runs):
    metrics = full_runs("dsm", engine)
    assert metrics["config"]["epochs"] == spec.EPOCHS_BY_METHOD["dsm"]
    print(
        f"dsm {engine}: energy distance {metrics['energy_distance']:.4f} (data "
        f"{metrics['data_energy_distance']:.4f}), within 3 sigma {metrics['within_3sigma']:.3f}, "
        f"shares {_shares(metrics)}; 10x: {metrics['energy_distance_10x']:.4f}, "
        f"{metrics['within_3sigma_10x']:.3f}, {_shares(metrics, '_10x')}; "
        f"{metrics['total_seconds']:.0f} s"
    )
    for suffix in ("", "_10x"):
        assert metrics[f"energy_distance{suffix}"] <= 0.02
        assert metrics[f"within_3sigma{suffix}"] >= 0.95
        assert 0.15 <= metrics[f"cluster_share_min{suffix}"]
        assert metrics[f"cluster_share_max{suffix}"] <= 0.25
    assert metrics["passed"] is True


@pytest.mark.slow
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_full_lecture_clears_its_bar_and_drifts(engine, full_runs):
    metrics = full_runs("lecture", engine)
    print(
        f"lecture {engine}: energy distance {metrics['energy_distance']:.4f} at 50 steps, "
        f"shares {_shares(metrics)}; {metrics['energy_distance_10x']:.4f} at 500 steps, shares "
        f"{_shares(metrics, '_10x')}; {metrics['total_seconds']:.0f} s"
    )
    assert metrics["energy_distance"] <= 0.15
    assert metrics["passed"] is True
    # The drift at ten times the steps is measured (metrics.json, the README's table), not held
    # to a bar: how far a run drifts depends on where its score happens to point between clusters.
    assert np.isfinite(metrics["energy_distance_10x"]) and metrics["sampling_steps_10x"] == 500


@pytest.mark.slow
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_full_score_digits_beats_the_pixel_gaussian(engine, full_runs):
    metrics = full_runs("digits", engine)
    print(
        f"score-digits {engine}: fd {metrics['fd']:.3f}, confidence {metrics['confidence']:.3f},"
        f" coverage {metrics['coverage']:.3f}; {metrics['total_seconds']:.0f} s"
    )
    assert metrics["fd"] <= digits_spec.PIXEL_GAUSSIAN_FD
    assert metrics["passed"] is True
