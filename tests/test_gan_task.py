"""The gan task end to end, and its pieces.

Fast, in this process (no framework): the layout (canonical entries, PyTorch conversion, state
names), the spec (bars, data, options), the judge's extras and the figures.
In subprocesses: a short `customfit run gan` on every engine (the files it writes, the history's
columns, the metrics' sanity), and a run SIGKILLed one step into its second epoch and resumed with
--resume, which must end where the uninterrupted run ends (both networks, batch-norm statistics,
both optimizers, the history, the samples and the per-epoch grids), on a native engine and on a
keras-* engine.
"""

import json
import math
import os
import shutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import cli_runs
import numpy as np
import pytest
import warm
from history_helpers import read_history_csv
from layout_helpers import gan_random_weights

from customfit import checkpoint, plots, registry
from customfit.tasks.gan import layout, spec
from customfit.trainers.canonical import from_canonical, to_canonical

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--epochs", "2", "--batch-size", "256"]
RESUMED = ("torch", "keras-torch")  # a native engine and a keras-* one
COLUMNS = ["epoch", "dis_loss", "gen_loss", "val_dis_loss", "val_gen_loss", "seconds"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1")  # two runs share the two cores
    return env


def _command(engine, out, *extra):
    return [
        sys.executable,
        "-m",
        "customfit",
        "run",
        "gan",
        "--engine",
        engine,
        "--out",
        str(out),
        *SHORT,
        *extra,
    ]


# ----------------------------------------------------------------------------- layout and spec


def test_entries_name_every_array_once_with_keras_shapes():
    for model in layout.MODELS:
        entries = layout.entries(model, 7)
        for net, entry_list in entries.items():
            names = [e.name for e in entry_list]
            assert len(names) == len(set(names)), (model, net)
        assert entries["gen"][0].shape == (7, entries["gen"][1].shape[0])  # dense (in, out)
    lecture = {e.name: e for e in layout.entries("lecture", 10)["gen"]}
    assert lecture["up1/kernel"].shape == (2, 2, 8, 16)  # conv-transpose (kh, kw, out, in)
    assert lecture["out/kernel"].shape == (3, 3, 1, 4)
    default = {e.name: e for e in layout.entries("default", 10)["dis"]}
    assert default["conv2/kernel"].shape == (4, 4, 32, 64)  # conv (kh, kw, in, out)
    assert "conv2/bias" not in default and default["norm/mean"].trainable is False
    with pytest.raises(ValueError, match="model"):
        layout.entries("mlp", 10)


def test_torch_layout_round_trips_and_is_pytorchs():
    rng = np.random.default_rng(0)
    for model in layout.MODELS:
        for entry_list in layout.entries(model, 10).values():
            for e in entry_list:
                a = rng.normal(size=e.shape).astype(np.float32)
                (t,) = from_canonical("torch", [a])
                np.testing.assert_array_equal(to_canonical("torch", [t])[0], a)
                if e.kind == "dense":
                    assert t.shape == e.shape[::-1]
                elif e.kind == "conv":  # nn.Conv2d (out, in, kh, kw)
                    assert t.shape == (e.shape[3], e.shape[2], e.shape[0], e.shape[1])
                elif e.kind == "conv_transpose":  # nn.ConvTranspose2d (in, out, kh, kw)
                    assert t.shape == (e.shape[3], e.shape[2], e.shape[0], e.shape[1])
                else:
                    assert t.shape == e.shape


def test_state_packs_and_unpacks_with_names_checked():
    weights = gan_random_weights("default", 10, seed=3)
    entries = layout.entries("default", 10)
    moments = {
        net: (
            [np.full(e.shape, 0.5, np.float32) for e in layout.trainable(entries[net])],
            [np.full(e.shape, 0.25, np.float32) for e in layout.trainable(entries[net])],
        )
        for net in layout.NETWORKS
    }
    arrays = layout.pack_state("default", 10, weights, moments, {"gen": 7, "dis": 35})
    assert "gen/up/kernel" in arrays and "dis/norm/variance" in arrays
    assert "dis/adam/m/logit/kernel" in arrays and "dis/adam/m/norm/mean" not in arrays
    w, m, s = layout.unpack_state("default", 10, arrays, layout.state_meta("torch"))
    assert s == {"gen": 7, "dis": 35}
    for net in layout.NETWORKS:
        for a, b in zip(w[net], weights[net]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="format"):
        layout.unpack_state("default", 10, arrays, {"format": "customfit.classifier.adam/1"})
    with pytest.raises(ValueError, match="gen/dense/kernel"):
        layout.unpack_state("default", 12, arrays, layout.state_meta("torch"))  # latent 12
    del arrays["dis/adam/step"]
    with pytest.raises(ValueError, match="dis/adam/step"):
        layout.unpack_state("default", 10, arrays, layout.state_meta("torch"))
    with pytest.raises(ValueError, match="expected 20 arrays, given 13"):
        layout.check_weights("lecture", 10, weights)
    with pytest.raises(ValueError, match="expected shape"):
        layout.check_weights("default", 11, weights)


def test_parity_noise_is_checked():
    z = np.zeros((4, 10), np.float32)
    assert sorted(layout.check_noise({"gen": z, "dis": z}, 10)) == ["dis", "gen"]
    for bad in (None, {}, {"critic": z}, {"gen": np.zeros((4, 9))}, z):
        with pytest.raises(ValueError, match="noise"):
            layout.check_noise(bad, 10)


def test_seeds_of_the_latents():
    assert layout.noise_seed(5) == layout.noise_seed(5) != layout.noise_seed(6)
    fixed = layout.fixed_latents(10)
    assert fixed.shape == (100, 10) and fixed.dtype == np.float32
    np.testing.assert_array_equal(fixed, layout.fixed_latents(10))


def test_spec_data_bars_and_options():
    split = spec.load()
    assert split.y_train is None and split.y_test is None
    assert split.x_train.shape == (1437, 8, 8, 1) and split.x_test.shape == (360, 8, 8, 1)
    assert split.train == (split.x_train,)
    bars = spec.bars({**spec.DEFAULTS, "critic_steps": 5, "latent": 10})
    assert bars == {"fd": ("<=", round(0.7 * spec.LECTURE_FD, 4)), "coverage": 0.9}
    assert spec.LECTURE_FD == 21.4021 and "keras-torch" in spec.LECTURE_FD_MEASURED
    assert spec.OPTIONS["critic_steps"].default == 5 and spec.OPTIONS["latent"].default == 10
    assert spec.OPTIONS["critic_steps"].pinned and spec.OPTIONS["latent"].pinned
    assert spec.MODEL_DEFAULTS["lecture"] == {"epochs": 20, "batch_size": 16, "lr": 1e-3}
    assert "gan" in registry.TASKS and registry.spec("gan").FAMILY == "gan"


def test_judge_extras_and_refusals(monkeypatch):
    from customfit.tasks import digit_judge

    # The digit judge itself is tested with it; here, what the spec adds to it.
    monkeypatch.setattr(
        digit_judge, "judge", lambda samples: {"fd": 1.0, "confidence": 1.0, "coverage": 1.0}
    )
    split = spec.load()
    rng = np.random.default_rng(0)
    copies = split.x_train[rng.choice(len(split.x_train), 1000)][..., 0]
    metrics = spec.judge({"samples": copies}, split, {})
    assert metrics["nearest_train_l2"] == 0.0  # copies of training digits
    assert 0.5 < metrics["held_out_nearest_train_l2"] < 3.0
    assert metrics["fd"] == 1.0 and metrics["lecture_fd"] == spec.LECTURE_FD
    a, b = rng.random((5, 4)), rng.random((7, 4))
    brute = np.array([min(np.linalg.norm(p - q) for q in b) for p in a])
    np.testing.assert_allclose(spec.nearest_l2(a, b), brute, rtol=1e-9)
    for bad in (copies[:10], copies * 2, np.full((1000, 8, 8), np.nan)):
        with pytest.raises(RuntimeError, match="samples"):
            spec.judge({"samples": bad}, split, {})


def test_figures_and_the_animation_of_the_epochs_run(tmp_path):
    from PIL import Image

    assert plots.mosaic(np.ones((100, 8, 8))).shape == (91, 91)
    assert plots.mosaic(np.ones((7, 8, 8)), columns=5).shape == (19, 46)

    class Fixed:  # stands in for a trainer: generate() of the fixed latents, by epoch
        epoch = 0

        def generate(self, z):
            assert z.shape == (100, 10)
            return np.full((len(z), 8, 8), self.epoch / 10, np.float32)

    trainer = Fixed()
    for epoch in (1, 2, 3):
        trainer.epoch = epoch
        spec.after_epoch(trainer, {"latent": 10}, epoch, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "epochs")) == [f"epoch_000{i}.npy" for i in (1, 2, 3)]
    assert not [f for f in os.listdir(tmp_path / "epochs") if f.startswith(".")]  # no temp files
    samples = np.random.default_rng(0).random((1000, 8, 8)).astype(np.float32)
    history = [{"epoch": 1}, {"epoch": 2}]  # a run of 2 epochs: epoch 3's file is not its own
    paths = spec.write({"samples": samples}, None, None, history, str(tmp_path), "title")
    assert sorted(paths) == ["samples", "samples_grid", "training_animation"]
    np.testing.assert_array_equal(np.load(paths["samples"]), samples)
    assert open(paths["samples_grid"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    gif = Image.open(paths["training_animation"])
    assert gif.format == "GIF" and gif.n_frames == 2


# ----------------------------------------------------------------------------- real runs


def _short_run(engine, folder):
    out = folder / engine
    done = warm.run(
        _command(engine, out, "--quiet")[1:],
        backend=registry.KERAS_BACKEND[engine],
        cwd=folder,
        env=_env(),
        timeout=600,
    )
    return {
        "out": out,
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr[-4000:],
    }


def _selected_engines(session):
    engines = set()
    for item in session.items:
        if item.module.__name__ != __name__:
            continue
        if hasattr(item, "callspec"):
            engines.add(item.callspec.params.get("engine"))
        elif item.originalname == "test_resume_keeps_the_critic_steps_and_refuses_others":
            engines.add("torch")
    # The slowest first (JAX compiles every program it runs); the resumed engines' runs early,
    # so that their tests need not wait for the rest.
    order = ("keras-jax", "flax", "torch", "keras-torch", "tensorflow", "keras-tensorflow")
    return [e for e in order if e in engines]


@pytest.fixture(scope="module")
def short_runs(request, tmp_path_factory):
    """engine -> its short run (2 epochs of batch 256, seed 0), two at a time."""
    folder = tmp_path_factory.mktemp("gan-runs")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {e: pool.submit(_short_run, e, folder) for e in _selected_engines(request.session)}

    def get(engine):
        run = futures[engine].result()
        assert run["returncode"] == 0, run["stderr"]
        return run

    yield get
    pool.shutdown(wait=True)


@pytest.mark.parametrize("engine", registry.ENGINES)
def test_short_run_writes_its_files_and_sane_metrics(engine, short_runs):
    run = short_runs(engine)
    out = run["out"]
    assert "gan on " + engine in run["stdout"] and "fd " in run["stdout"]
    assert (
        "beside it, the lecture's GAN (keras-torch, seed 0): fd 21.4021, confidence 0.8514, "
        "coverage 0.9125"
    ) in run["stdout"]
    assert "beside it, real training digits: fd 1.0705" in run["stdout"]
    assert sorted(os.listdir(out)) == sorted(
        [
            "checkpoint.safetensors",
            "curves.png",
            "epochs",
            "history.csv",
            "metrics.json",
            "samples.npy",
            "samples.png",
            "training.gif",
        ]
    )
    assert sorted(os.listdir(out / "epochs")) == ["epoch_0001.npy", "epoch_0002.npy"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "gan" and metrics["engine"] == engine and metrics["headline"] == "fd"
    assert metrics["config"] == {
        "epochs": 2,
        "batch_size": 256,
        "lr": 0.001,
        "seed": 0,
        "model": "default",
        "data": "built-in",
        "critic_steps": 5,
        "latent": 10,
    }
    assert metrics["bar"] == {"fd": ["<=", round(0.7 * spec.LECTURE_FD, 4)], "coverage": 0.9}
    assert math.isfinite(metrics["fd"]) and metrics["fd"] > 0.5
    assert 0.1 < metrics["confidence"] <= 1.0 and 0.0 <= metrics["coverage"] <= 1.0
    assert metrics["nearest_train_l2"] > 0.1
    assert metrics["passed"] == (
        metrics["fd"] <= metrics["bar"]["fd"][1] and metrics["coverage"] >= 0.9
    )

    history = read_history_csv(out / "history.csv")
    assert list(history[0]) == COLUMNS and [r["epoch"] for r in history] == [1, 2]
    for row in history:
        assert all(0.0 < row[c] < 50.0 for c in COLUMNS[1:5]), row
    arrays, meta = checkpoint.load(out / "checkpoint.safetensors")
    assert meta["trainer"]["format"] == layout.STATE_FORMAT and meta["epoch"] == 2
    batches = math.ceil(1437 / 256)
    assert int(arrays["gen/adam/step"]) == 2 * batches
    assert int(arrays["dis/adam/step"]) == 2 * 5 * batches  # 5 critic steps per batch

    samples = np.load(out / "samples.npy")
    assert samples.shape == (1000, 8, 8) and samples.dtype == np.float32
    # Not constant (after 12 generator updates the moving statistics that inference mode uses
    # have moved only 11% of the way from their start: the digits are still grey blurs).
    assert 0.0 <= samples.min() and samples.max() <= 1.0 and samples.std() > 1e-3
    grids = [np.load(out / "epochs" / f"epoch_000{i}.npy") for i in (1, 2)]
    assert all(g.shape == (100, 8, 8) and 0.0 <= g.min() and g.max() <= 1.0 for g in grids)
    assert not np.array_equal(grids[0], grids[1])
    from PIL import Image

    assert Image.open(out / "training.gif").n_frames == 2
    for png in ("curves.png", "samples.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("engine", RESUMED)
def test_killed_run_resumes_to_where_the_uninterrupted_run_ends(engine, short_runs, tmp_path):
    straight = short_runs(engine)["out"]
    out = tmp_path / "killed"
    epochs, flags = int(SHORT[1]), SHORT[2:]  # the uninterrupted run's settings
    killed = cli_runs.run_until_killed("gan", engine, str(out), epochs, *flags, epoch=2)
    assert killed["returncode"] == -signal.SIGKILL, killed
    _, meta = checkpoint.load(out / "checkpoint.safetensors")
    # Killed one step into epoch 2, so the checkpoint holds epoch 1, its history and its grid.
    assert meta["epoch"] == 1
    assert not (out / "metrics.json").exists() and not (out / "training.gif").exists()
    assert sorted(os.listdir(out / "epochs"))[:1] == ["epoch_0001.npy"]

    resumed = warm.run(
        _command(engine, out, "--resume", "--quiet")[1:],
        backend=registry.KERAS_BACKEND[engine],
        cwd=tmp_path,
        env=_env(),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed after epoch {meta['epoch']}" in resumed.stdout

    a_arrays, a_meta = checkpoint.load(straight / "checkpoint.safetensors")
    r_arrays, r_meta = checkpoint.load(out / "checkpoint.safetensors")

    def numbers(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert numbers(r_meta["history"]) == numbers(a_meta["history"])
    assert sorted(r_arrays) == sorted(a_arrays)
    for name in a_arrays:  # both networks, batch-norm statistics, both optimizers, bit for bit
        np.testing.assert_array_equal(r_arrays[name], a_arrays[name], err_msg=name)
    for name in ("samples.npy", "epochs/epoch_0001.npy", "epochs/epoch_0002.npy"):
        np.testing.assert_array_equal(np.load(out / name), np.load(straight / name), err_msg=name)
    m_straight = json.loads((straight / "metrics.json").read_text())
    m_resumed = json.loads((out / "metrics.json").read_text())
    assert m_resumed["fd"] == m_straight["fd"] and m_resumed["resumed_from_epoch"] == meta["epoch"]
    from PIL import Image

    assert Image.open(out / "training.gif").n_frames == 2  # the killed run's epoch 1 is in it


def test_resume_keeps_the_critic_steps_and_refuses_others(short_runs, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(short_runs("torch")["out"], out)
    done = warm.run(
        _command("torch", out, "--resume", "--critic-steps", "3")[1:],
        backend=registry.KERAS_BACKEND["torch"],
        cwd=tmp_path,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "critic" in done.stderr and "5" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "flag, value, expected",
    [("--critic-steps", "0", "critic"), ("--latent", "-3", "latent"), ("--model", "mlp", "model")],
)
def test_bad_options_get_one_line(flag, value, expected, tmp_path):
    done = warm.run(
        _command("torch", tmp_path / "bad", flag, value)[1:],
        backend=registry.KERAS_BACKEND["torch"],
        cwd=tmp_path,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 2 and expected in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "bad").exists()
