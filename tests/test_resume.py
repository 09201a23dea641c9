"""Repeatability and resume.

Fast, in this process: the run loop and the runner around a small NumPy Trainer (what they write,
the Result, a crash after epoch 2 resumed to the same end).
In subprocesses (a Keras backend is fixed per process): the real engines on the toy task. The same
seed gives the same history twice; a run killed with SIGKILL one step into its 3rd epoch (after
the 2nd epoch's checkpoint) and resumed with --resume ends with the same weights, optimizer state
and history as one that ran straight through.
"""

import csv
import json
import os
import signal
import subprocess
import sys

import cli_runs
import numpy as np
import pytest
import warm
from data_helpers import epoch_permutation
from history_helpers import read_history_csv

from customfit import checkpoint, registry, runs
from customfit.runs import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY_NUMBERS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def _env(**extra):
    # One thread, as in the warm servers the runs fork from (tests/warm.py) and in the killed run
    # of tests/cli_runs.py, so that the straight, killed and resumed runs compute alike.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    env.update(extra)
    return env


def _numbers(history):
    return [{k: row[k] for k in HISTORY_NUMBERS} for row in history]


# ----------------------------------------------------------------------------- a NumPy Trainer


class NumpyTrainer:
    """Softmax regression with Adam, in NumPy: follows customfit.protocol exactly, so the
    loop and the runner can be tested without a framework."""

    crash_in_epoch = None  # set to an epoch number to raise inside that epoch's training pass
    epochs_started = 0

    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        d = int(np.prod(input_shape))
        rng = np.random.default_rng(seed)
        self.w = [rng.normal(scale=0.1, size=(d, num_classes)), np.zeros(num_classes)]
        self.m = [np.zeros_like(w) for w in self.w]
        self.v = [np.zeros_like(w) for w in self.w]
        self.step, self.lr, self.k = 0, lr, num_classes

    def _logits(self, x):
        return x.reshape(len(x), -1) @ self.w[0] + self.w[1]

    def predict_proba(self, x):
        z = self._logits(np.asarray(x, np.float64))
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def objective_and_grads(self, batch, noise=None):
        x, y = batch
        p = self.predict_proba(x)
        loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
        p[np.arange(len(y)), y] -= 1
        p /= len(y)
        return loss, [x.reshape(len(x), -1).T @ p, p.sum(axis=0)]

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        type(self).epochs_started += 1
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        loss_sum = correct = seen = 0
        for i, start in enumerate(range(0, len(x), batch_size)):
            if (
                self.crash_in_epoch is not None
                and type(self).epochs_started == self.crash_in_epoch
                and i == 5
            ):
                raise RuntimeError("simulated crash")
            idx = order[start : start + batch_size]
            correct += int((self.predict_proba(x[idx]).argmax(1) == y[idx]).sum())
            loss, grads = self.objective_and_grads((x[idx], y[idx]))
            self.step += 1
            for j, g in enumerate(grads):
                self.m[j] = 0.9 * self.m[j] + 0.1 * g
                self.v[j] = 0.999 * self.v[j] + 0.001 * g * g
                m_hat = self.m[j] / (1 - 0.9**self.step)
                v_hat = self.v[j] / (1 - 0.999**self.step)
                self.w[j] = self.w[j] - self.lr * m_hat / (np.sqrt(v_hat) + 1e-7)
            loss_sum += loss * len(idx)
            seen += len(idx)
            on_batch({"loss": loss_sum / seen, "accuracy": correct / seen})
        return {"loss": loss_sum / seen, "accuracy": correct / seen}

    def evaluate(self, x, y, batch_size):
        p = self.predict_proba(x)
        return {
            "loss": float(-np.mean(np.log(p[np.arange(len(y)), y]))),
            "accuracy": float(np.mean(p.argmax(1) == y)),
        }

    def get_weights(self):
        return [w.copy() for w in self.w]

    def set_weights(self, weights):
        self.w = [np.array(w) for w in weights]

    def state(self):
        arrays = {f"w{j}": w for j, w in enumerate(self.w)}
        arrays.update({f"m{j}": m for j, m in enumerate(self.m)})
        arrays.update({f"v{j}": v for j, v in enumerate(self.v)})
        arrays["step"] = np.array(self.step, np.int64)
        return arrays, {"kind": "numpy"}

    def load_state(self, arrays, meta):
        assert meta == {"kind": "numpy"}
        self.w = [arrays["w0"], arrays["w1"]]
        self.m = [arrays["m0"], arrays["m1"]]
        self.v = [arrays["v0"], arrays["v1"]]
        self.step = int(arrays["step"])


@pytest.fixture
def numpy_engine(monkeypatch):
    """cf.run with the NumPy Trainer standing in for the torch engine, in this process."""
    monkeypatch.setattr(registry, "trainer_class", lambda task, engine: NumpyTrainer)
    monkeypatch.setattr(launch, "needs_subprocess", lambda engine: False)
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # run() sets it; monkeypatch puts it back
    monkeypatch.setattr(NumpyTrainer, "crash_in_epoch", None)
    monkeypatch.setattr(NumpyTrainer, "epochs_started", 0)
    return NumpyTrainer


def test_run_writes_its_files_and_result(numpy_engine, tmp_path):
    out = tmp_path / "toy"
    result = runs.run("toy", "torch", epochs=3, lr=0.001, out=str(out), verbose=False)

    assert result.task == "toy" and result.engine == "torch"
    assert result.config == {
        "epochs": 3,
        "batch_size": 10,
        "lr": 0.001,
        "seed": 0,
        "model": "lecture",
        "data": "built-in",
    }
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert list(result.history[0]) == [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
    ]
    assert sorted(os.listdir(out)) == [
        "checkpoint.safetensors",
        "curves.png",
        "decision_regions.png",
        "history.csv",
        "metrics.json",
    ]
    assert result.paths == {
        name: str(out / file)
        for name, file in [
            ("checkpoint", "checkpoint.safetensors"),
            ("history", "history.csv"),
            ("metrics", "metrics.json"),
            ("curves", "curves.png"),
            ("decision_regions", "decision_regions.png"),
        ]
    }
    assert result.out_dir == str(out)
    for png in ("curves.png", "decision_regions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The judge's accuracy is recomputed from predict_proba, and matches the loop's evaluate.
    assert result.metrics["accuracy"] == pytest.approx(
        result.history[-1]["val_accuracy"], abs=1e-12
    )
    assert result.metrics["loss"] == pytest.approx(result.history[-1]["val_loss"], rel=1e-9)
    assert result.bars == {"accuracy": 0.99}
    assert result.passed == (result.metrics["accuracy"] >= 0.99)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == result.metrics["accuracy"]
    assert metrics["bar"] == {"accuracy": 0.99} and metrics["passed"] == result.passed
    assert metrics["config"] == result.config
    assert metrics["epoch_seconds"] == [row["seconds"] for row in result.history]
    assert metrics["seconds_per_epoch"] == pytest.approx(np.mean(metrics["epoch_seconds"][1:]))
    assert {"python", "numpy", "torch"} <= set(metrics["versions"])
    assert metrics["total_seconds"] >= sum(metrics["epoch_seconds"])

    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert read_history_csv(out / "history.csv") == result.history  # exact, via repr

    arrays, meta = checkpoint.load(out / "checkpoint.safetensors")
    assert (meta["task"], meta["engine"], meta["model"], meta["epoch"]) == (
        "toy",
        "torch",
        "lecture",
        3,
    )
    assert meta["history"] == result.history
    assert int(arrays["step"]) == 3 * 300  # 3000 points, batches of 10


def test_each_epoch_is_shuffled_by_its_own_seed(numpy_engine, tmp_path, monkeypatch):
    seen = []
    original = NumpyTrainer.train_epoch

    def spy(self, x, y, batch_size, shuffle_seed, on_batch):
        seen.append(shuffle_seed)
        return original(self, x, y, batch_size, shuffle_seed, on_batch)

    monkeypatch.setattr(NumpyTrainer, "train_epoch", spy)
    runs.run("toy", "torch", epochs=3, seed=7, out=str(tmp_path / "a"), verbose=False)
    from customfit.data import epoch_seed

    assert seen == [epoch_seed(7, 1), epoch_seed(7, 2), epoch_seed(7, 3)]
    assert len(set(seen)) == 3
    assert not np.array_equal(epoch_permutation(10, 7, 1), epoch_permutation(10, 7, 2))


def test_same_seed_same_history_other_seed_other_history(numpy_engine, tmp_path):
    a = runs.run("toy", "torch", epochs=2, seed=1, out=str(tmp_path / "a"), verbose=False)
    b = runs.run("toy", "torch", epochs=2, seed=1, out=str(tmp_path / "b"), verbose=False)
    c = runs.run("toy", "torch", epochs=2, seed=2, out=str(tmp_path / "c"), verbose=False)
    assert _numbers(a.history) == _numbers(b.history)
    assert _numbers(a.history) != _numbers(c.history)


def test_a_crash_in_epoch_3_resumes_to_the_same_end(numpy_engine, tmp_path):
    straight = runs.run("toy", "torch", epochs=4, out=str(tmp_path / "straight"), verbose=False)

    out = str(tmp_path / "crashed")
    NumpyTrainer.epochs_started = 0
    NumpyTrainer.crash_in_epoch = 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        runs.run("toy", "torch", epochs=4, out=out, verbose=False)
    assert checkpoint.load(os.path.join(out, "checkpoint.safetensors"))[1]["epoch"] == 2
    assert len(read_history_csv(os.path.join(out, "history.csv"))) == 2
    assert not os.path.exists(os.path.join(out, "metrics.json"))

    NumpyTrainer.crash_in_epoch = None
    resumed = runs.run(
        "toy", "torch", out=out, resume=True, verbose=False
    )  # epochs from the checkpoint
    assert resumed.resumed_from_epoch == 2
    assert resumed.config == straight.config
    assert _numbers(resumed.history) == _numbers(straight.history)
    assert resumed.metrics == straight.metrics
    a, _ = checkpoint.load(os.path.join(out, "checkpoint.safetensors"))
    b, _ = checkpoint.load(os.path.join(straight.out_dir, "checkpoint.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resume_can_extend_a_finished_run_and_a_finished_run_resumes_to_itself(
    numpy_engine, tmp_path
):
    straight = runs.run("toy", "torch", epochs=3, out=str(tmp_path / "straight"), verbose=False)
    out = str(tmp_path / "short")
    runs.run("toy", "torch", epochs=2, out=out, verbose=False)
    NumpyTrainer.epochs_started = 0
    again = runs.run("toy", "torch", out=out, resume=True, verbose=False)
    assert NumpyTrainer.epochs_started == 0 and again.resumed_from_epoch == 2
    assert len(again.history) == 2
    longer = runs.run("toy", "torch", epochs=3, out=out, resume=True, verbose=False)
    assert NumpyTrainer.epochs_started == 1
    assert _numbers(longer.history) == _numbers(straight.history)


def test_user_data_as_arrays(numpy_engine, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) * 3  # two of the five classes
    result = runs.run(
        "toy",
        "torch",
        epochs=3,
        batch_size=20,
        lr=0.05,
        out=str(tmp_path / "mine"),
        data=(x[:150], y[:150], x[150:], y[150:]),
        verbose=False,
    )
    assert result.config["data"] == "arrays"
    assert result.metrics["accuracy"] >= 0.9
    _, meta = checkpoint.load(os.path.join(result.out_dir, "checkpoint.safetensors"))
    assert meta["data_sha256"] and len(meta["data_sha256"]) == 64


# ----------------------------------------------------------------------------- the real engines

STRAIGHT = r"""
import json, sys
import numpy as np
import customfit as cf
from customfit import checkpoint
engine, out = sys.argv[1], sys.argv[2]
histories = []
for name in ("a", "b"):
    r = cf.run("toy", engine, epochs=int(sys.argv[3]), out=f"{out}/{name}", verbose=False)
    histories.append(r.history)
print(json.dumps(histories))
"""


def _load(path):
    return checkpoint.load(os.path.join(path, "checkpoint.safetensors"))


@pytest.mark.parametrize("engine", ["torch", "flax", "keras-jax"])
def test_killed_run_resumes_to_the_same_weights_and_history(engine, tmp_path):
    epochs = 4
    straight = warm.run(
        ["-c", STRAIGHT, engine, "straight", str(epochs)],
        backend=registry.KERAS_BACKEND[engine],
        cwd=tmp_path,
        env=_env(),
        timeout=600,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    first, second = json.loads(straight.stdout.strip().splitlines()[-1])
    # The same seed on the same engine: the same history, twice.
    assert len(first) == epochs
    assert _numbers(first) == _numbers(second)

    out = str(tmp_path / "killed")
    killed = cli_runs.run_until_killed("toy", engine, out, epochs)
    assert killed["returncode"] == -signal.SIGKILL, killed
    _, meta = _load(out)
    # Killed one step into epoch 3, so the checkpoint holds epoch 2.
    assert meta["epoch"] == 2
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    assert len(read_history_csv(os.path.join(out, "history.csv"))) == meta["epoch"]

    resumed = warm.run(
        [
            "-m",
            "customfit",
            "run",
            "toy",
            "--engine",
            engine,
            "--out",
            out,
            "--resume",
            "--quiet",
        ],
        backend=registry.KERAS_BACKEND[engine],
        cwd=tmp_path,
        env=_env(),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed after epoch {meta['epoch']}" in resumed.stdout

    a_arrays, a_meta = _load(tmp_path / "straight" / "a")
    r_arrays, r_meta = _load(out)
    assert _numbers(r_meta["history"]) == _numbers(a_meta["history"]) == _numbers(first)
    assert _numbers(read_history_csv(os.path.join(out, "history.csv"))) == _numbers(first)
    assert sorted(r_arrays) == sorted(a_arrays)
    for name in a_arrays:  # weights and the optimizer's state, bit for bit
        np.testing.assert_array_equal(r_arrays[name], a_arrays[name], err_msg=name)
    m_straight = json.loads((tmp_path / "straight" / "a" / "metrics.json").read_text())
    m_resumed = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert m_resumed["accuracy"] == m_straight["accuracy"]
    assert m_resumed["resumed_from_epoch"] == meta["epoch"]


def test_a_process_with_another_keras_backend_runs_the_job_in_a_subprocess(tmp_path):
    code = r"""
import json, sys, types
fake = types.ModuleType("keras")            # Keras already imported here, with the torch backend
fake.backend = types.SimpleNamespace(backend=lambda: "torch")
sys.modules["keras"] = fake
from customfit import runs
from customfit.runs import launch
assert launch.needs_subprocess("flax") and not launch.needs_subprocess("torch")
r = runs.run("toy", "flax", epochs=2, out="sub", verbose=False)
print(json.dumps({"accuracy": r.metrics["accuracy"], "epochs": len(r.history), "out": r.out_dir,
                  "paths": sorted(r.paths), "jax_here": any(m.split(".")[0] in ("jax", "flax") for m in sys.modules)}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["jax_here"] is False, (
        "the flax job ran in the process whose Keras backend is torch"
    )
    assert reply["epochs"] == 2 and reply["out"] == "sub"
    assert reply["paths"] == ["checkpoint", "curves", "decision_regions", "history", "metrics"]
    metrics = json.loads((tmp_path / "sub" / "metrics.json").read_text())
    assert metrics["accuracy"] == reply["accuracy"] and metrics["engine"] == "flax"


def test_digits_figures(numpy_engine, tmp_path):
    result = runs.run("digits", "torch", epochs=1, out=str(tmp_path / "d"), verbose=False)
    assert sorted(result.paths) == ["checkpoint", "curves", "history", "metrics", "probabilities"]
    assert open(result.paths["probabilities"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert result.bars == {"accuracy": 0.985}
    lecture = runs.run(
        "digits", "torch", model="lecture", epochs=1, out=str(tmp_path / "l"), verbose=False
    )
    assert lecture.bars == {"accuracy": 0.88}
    assert (lecture.config["batch_size"], lecture.config["model"]) == (10, "lecture")
