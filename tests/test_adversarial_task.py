"""Task `adversarial` through the runner and the command line: its judge, what a run writes,
--from, --resume with pinned options, and every bad input as one line, exit 2, nothing written.

The attack itself on each engine (input gradients, parity, bars) is tests/test_adversarial_engines.py
and test_accuracy.py; here a NumPy softmax regression stands in for the engines where it can.
"""

import json
import os

import numpy as np
import pytest

from customfit import checkpoint, registry
from customfit.data import digits_split
from customfit import runs
from customfit.runs import launch
from customfit.errors import UsageError
from customfit.tasks.adversarial import rules, spec

from test_cli import _fake_checkpoint, assert_usage_error, customfit
from test_resume import NumpyTrainer


# ----------------------------------------------------------------------------- the judge


def _outputs(x, x_adv, target, proba):
    n = len(x)
    return {
        "x": np.asarray(x, np.float32),
        "x_adv": np.asarray(x_adv, np.float32),
        "label": np.zeros(n, np.int64),
        "target": np.asarray(target),
        "index": np.arange(n),
        "proba": np.asarray(proba, np.float64),
        "clean_proba": np.eye(10)[[0, 1, 1]],
    }


class _Split:
    y_test = np.array([0, 1, 2])


def test_judge_counts_successes_norms_and_bounds():
    x = np.full((4, 8, 8, 1), 0.5)
    x_adv = x.copy()
    x_adv[0, 0, 0, 0] = 0.8  # L-inf 0.3: inside the ball
    x_adv[1, 0, 0, 0] = 0.9  # L-inf 0.4: outside it
    x_adv[2, 1, 1, 0] = 1.2  # outside [0, 1]
    x_adv[3, 2, 2, 0] = 0.2  # L-inf 0.3
    target = np.array([3, 3, 4, 5])
    proba = np.full((4, 10), 0.05)
    proba[[0, 1, 2, 3], [3, 3, 0, 5]] = 0.55  # pairs 0, 1 and 3 answer their target
    metrics = spec.judge(
        _outputs(x, x_adv, target, proba), _Split, {"method": "lecture", "eps": 0.3}
    )
    assert metrics["success_rate"] == 0.75
    assert metrics["eps"] is None
    assert metrics["in_bounds"] == 0.75  # the lecture's method has no ball: only [0, 1] counts
    assert metrics["mean_linf"] == pytest.approx((0.3 + 0.4 + 0.7 + 0.3) / 4, abs=1e-6)
    assert metrics["max_linf"] == pytest.approx(0.7, abs=1e-6)
    assert metrics["mean_l2"] == pytest.approx((0.3 + 0.4 + 0.7 + 0.3) / 4, abs=1e-6)
    assert metrics["mean_target_probability"] == pytest.approx((0.55 * 3 + 0.05) / 4)
    assert metrics["clean_accuracy"] == pytest.approx(2 / 3)
    assert metrics["pairs"] == 4

    outputs = _outputs(x, x_adv, target, proba)
    outputs.update(
        sweep_eps=np.array([0.1, 0.3]),
        sweep_target=target,
        sweep_proba=np.stack([np.eye(10)[[0, 0, 0, 0]], proba]),
    )
    metrics = spec.judge(outputs, _Split, {"method": "pgd", "eps": 0.3})
    assert metrics["eps"] == 0.3
    assert metrics["in_bounds"] == 0.5  # pair 1 leaves the ball, pair 2 the box
    assert metrics["success_by_eps"] == {"0.1": 0.0, "0.3": 0.75}


def test_pairs_are_every_digit_toward_each_wrong_label():
    split = digits_split()
    index, label, target = spec.pairs(split)
    assert len(index) == 3240 == spec.ALL_PAIRS
    assert np.all(label == split.y_test[index]) and np.all(target != label)
    for i in (0, 17, 359):  # each digit: all nine wrong labels, once
        assert sorted(target[index == i]) == sorted(set(range(10)) - {split.y_test[i]})
    some = spec.pairs(split, 100)
    assert len(some[0]) == 100 and all(
        np.array_equal(a, b) for a, b in zip(some, spec.pairs(split, 100))
    )


# ----------------------------------------------------------------------------- a NumPy engine


class NumpyAttacker(NumpyTrainer):
    """The test_resume softmax regression, with the attack of customfit.tasks.adversarial.rules
    written in NumPy (its input gradient is closed-form)."""

    def attack(self, x, target, *, method, eps, steps, batch_size=None):
        x = np.asarray(x, np.float64)
        dx = np.zeros_like(x)
        for _ in range(steps):
            p = self.predict_proba(x + dx)
            p[np.arange(len(x)), target] -= 1
            g = (p @ self.w[0].T).reshape(x.shape)
            if method == "pgd":
                dx = np.clip(dx - rules.pgd_step_size(eps, steps) * np.sign(g), -eps, eps)
            else:
                dx = dx - rules.LECTURE_STEP * (g + rules.LECTURE_C * np.sign(dx) / dx[0].size)
            dx = np.clip(x + dx, 0, 1) - x
        return (x + dx).astype(np.float32)


@pytest.fixture
def numpy_engine(monkeypatch):
    monkeypatch.setattr(registry, "trainer_class", lambda task, engine: NumpyAttacker)
    monkeypatch.setattr(launch, "needs_subprocess", lambda engine: False)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    return NumpyAttacker


def test_a_run_writes_perturbations_metrics_and_figures(numpy_engine, tmp_path):
    out = tmp_path / "adv"
    result = runs.run(
        "adversarial",
        "torch",
        epochs=2,
        lr=0.01,
        pairs=200,
        steps=20,
        eps=0.2,
        out=str(out),
        verbose=False,
    )
    assert result.config == {
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.01,
        "seed": 0,
        "model": "default",
        "data": "built-in",
        "method": "pgd",
        "eps": 0.2,
        "steps": 20,
        "pairs": 200,
        "from_run": None,
    }
    assert sorted(os.listdir(out)) == sorted(
        [
            "checkpoint.safetensors",
            "curves.png",
            "history.csv",
            "metrics.json",
            "perturbation.png",
            "perturbations.npz",
            "success_vs_eps.png",
        ]
    )
    with np.load(out / "perturbations.npz", allow_pickle=False) as saved:
        assert sorted(saved.files) == ["label", "proba", "target", "x", "x_adv"]
        x, x_adv, target, proba = saved["x"], saved["x_adv"], saved["target"], saved["proba"]
    assert x.shape == x_adv.shape == (200, 8, 8, 1) and proba.shape == (200, 10)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert np.allclose(proba.sum(axis=1), 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["success_rate"]
        == np.mean(proba.argmax(axis=1) == target)
        == result.metrics["success_rate"]
    )
    assert metrics["in_bounds"] == 1.0 and metrics["pairs"] == 200 and metrics["eps"] == 0.2
    assert metrics["headline"] == "success_rate"
    assert metrics["bar"] == {"success_rate": 0.95, "in_bounds": 1.0}
    assert metrics["passed"] == (metrics["success_rate"] >= 0.95)
    assert set(metrics["success_by_eps"]) == {"0.05", "0.1", "0.15", "0.2", "0.25", "0.3"}
    # A bigger ball never does worse on the same pairs with the same steps.
    rates = [metrics["success_by_eps"][k] for k in ("0.05", "0.1", "0.2", "0.3")]
    assert rates == sorted(rates) and rates[-1] > rates[0]
    for png in ("perturbation.png", "success_vs_eps.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_from_a_digits_run_and_resume_keep_the_settings(numpy_engine, tmp_path):
    digits = runs.run("digits", "torch", epochs=2, lr=0.01, out=str(tmp_path / "d"), verbose=False)
    adv = runs.run(
        "adversarial",
        "torch",
        from_run=str(tmp_path / "d"),
        pairs=90,
        method="lecture",
        out=str(tmp_path / "a"),
        verbose=False,
    )
    assert adv.started_from == str(tmp_path / "d")
    assert adv.history == digits.history  # nothing trained again
    assert (
        adv.config["epochs"] == 2
        and adv.config["lr"] == 0.01
        and adv.config["steps"] == rules.DEFAULT_STEPS["lecture"]
    )
    assert adv.metrics["clean_accuracy"] == digits.metrics["accuracy"]
    assert adv.bars == {"success_rate": 0.90, "in_bounds": 1.0}
    arrays, meta = checkpoint.load(tmp_path / "a" / "checkpoint.safetensors")
    assert meta["task"] == "adversarial" and meta["epoch"] == 2
    assert np.array_equal(
        arrays["w0"], checkpoint.load(tmp_path / "d" / "checkpoint.safetensors")[0]["w0"]
    )

    again = runs.run("adversarial", "torch", resume=True, out=str(tmp_path / "a"), verbose=False)
    assert again.config == adv.config and again.metrics == adv.metrics
    with pytest.raises(UsageError) as info:
        runs.run(
            "adversarial",
            "torch",
            resume=True,
            method="pgd",
            out=str(tmp_path / "a"),
            verbose=False,
        )
    assert str(info.value) == (
        "method: expected 'lecture' as in the checkpoint being resumed "
        "(or leave --method out); got 'pgd'"
    )
    with pytest.raises(UsageError) as info:
        runs.run(
            "adversarial",
            "torch",
            from_run=str(tmp_path / "d"),
            epochs=5,
            out=str(tmp_path / "b"),
            verbose=False,
        )
    assert (
        str(info.value)
        == "epochs: expected 2 as in the run it starts from (or leave --epochs out); got 5"
    )
    assert not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- bad input


RUN = ["run", "adversarial", "--engine", "torch", "--out", "out"]


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--eps", "0"], "--eps: expected a number > 0 and <= 1; got '0'"),
        (["--eps", "-0.1"], "--eps: expected a number > 0 and <= 1; got '-0.1'"),
        (["--eps", "1.5"], "--eps: expected a number > 0 and <= 1; got '1.5'"),
        (["--eps", "nan"], "--eps: expected a number > 0 and <= 1; got 'nan'"),
        (["--eps", "big"], "--eps: expected a number > 0 and <= 1; got 'big'"),
        (["--method", "fgsm"], "--method: expected one of pgd, lecture; got 'fgsm'"),
        (["--steps", "0"], "--steps: expected an integer >= 1 and <= 100000; got '0'"),
        (["--steps", "2.5"], "--steps: expected an integer >= 1 and <= 100000; got '2.5'"),
        (["--pairs", "3241"], "--pairs: expected an integer >= 1 and <= 3240; got '3241'"),
        (
            ["--from", "nowhere"],
            "--from: expected an existing folder; got 'nowhere', which does not exist",
        ),
    ],
)
def test_bad_options_are_one_line(flags, expected, tmp_path):
    assert_usage_error(RUN + flags, str(tmp_path), expected)


@pytest.mark.parametrize(
    "meta, expected",
    [
        (None, "got 'src', which has no checkpoint"),
        ({}, "got 'src', a toy run of engine torch, model lecture"),
        (
            {"task": "digits", "model": "default", "engine": "flax"},
            "got 'src', a digits run of engine flax, model default",
        ),
        ({"task": "digits", "model": "default"}, "got 'src', which stopped after epoch 1 of 5"),
    ],
)
def test_from_needs_a_finished_digits_run_of_the_same_engine(meta, expected, tmp_path):
    (tmp_path / "src").mkdir()
    if meta is not None:
        _fake_checkpoint(tmp_path / "src", **meta)
    line = assert_usage_error(RUN + ["--from", "src"], str(tmp_path), expected)
    assert (
        "--from: expected a folder holding a finished digits run of engine torch (default model)"
        in line
    )


def test_an_option_of_another_task_is_refused(tmp_path):
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--out", "out", "--eps", "0.3"],
        str(tmp_path),
        "--eps: expected an option of task toy (its options: none); "
        "got 'eps', which task toy does not have",
    )
    import customfit as cf

    with pytest.raises(UsageError) as info:
        cf.run("digits", "torch", method="pgd", out=str(tmp_path / "out"))
    assert str(info.value) == (
        "method: expected an option of task digits (its options: none); "
        "got 'method', which task digits does not have"
    )
    with pytest.raises(UsageError) as info:
        cf.run("adversarial", "torch", steps=0, out=str(tmp_path / "out"))
    assert str(info.value) == "steps: expected an integer >= 1 and <= 100000; got 0"
    assert not (tmp_path / "out").exists()


def test_resume_pins_the_attack(tmp_path):
    config = {
        "epochs": 30,
        "batch_size": 64,
        "lr": 0.001,
        "seed": 0,
        "model": "default",
        "data": "built-in",
        "method": "pgd",
        "eps": 0.3,
        "steps": 10,
        "pairs": 3240,
        "from_run": None,
    }
    _fake_checkpoint(tmp_path / "out", task="adversarial", model="default", config=config)
    assert_usage_error(
        RUN + ["--resume", "--eps", "0.2"],
        str(tmp_path),
        "--eps: expected 0.3 as in the checkpoint being resumed (or leave --eps out); got 0.2",
    )
    assert_usage_error(
        RUN + ["--resume", "--steps", "11"],
        str(tmp_path),
        "--steps: expected 10 as in the checkpoint being resumed (or leave --steps out); got 11",
    )


def test_list_shows_the_options_and_bars(tmp_path):
    proc = customfit("list", cwd=tmp_path)
    assert proc.returncode == 0
    for line in (
        "--method pgd|lecture, default pgd",
        "--eps float in (0, 1], default 0.3",
        f"--steps int in [1, 100000], default {rules.DEFAULT_STEPS['pgd']} for pgd",
        "bar (--method pgd): success_rate >= 0.95, in_bounds >= 1.0",
        "bar (--method lecture): success_rate >= 0.9, in_bounds >= 1.0",
        spec.JUDGE,
    ):
        assert line in proc.stdout, line
