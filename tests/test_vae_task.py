"""The vae task's spec, in this process and without a framework: its bar against the judge's
reference, its negative ELBO by hand, its settings per model, its options on the command line."""

import math

import numpy as np
import pytest

from customfit.data import digits_split
from customfit.tasks import digit_judge
from customfit.tasks.vae import spec

from test_cli import assert_usage_error, customfit

RUN = ["run", "vae", "--engine", "torch", "--out", "out"]


def test_the_bar_is_the_pixel_gaussian_reference():
    reference = digit_judge.references()["pixel_gaussian"]["fd"]
    assert spec.PIXEL_GAUSSIAN_FD <= reference < spec.PIXEL_GAUSSIAN_FD + 0.01
    for model in spec.MODELS:
        assert spec.bars({"model": model}) == {
            "fd": ("<=", spec.PIXEL_GAUSSIAN_FD),
            "confidence": 0.85,
        }


def test_each_model_has_its_own_temperature_and_latent_size():
    assert spec.filled({"model": "default", "temperature": None, "latent": None}) == {
        "model": "default",
        "temperature": 0.1,
        "latent": 8,
    }
    assert spec.filled({"model": "lecture", "temperature": None, "latent": None}) == {
        "model": "lecture",
        "temperature": 0.01,
        "latent": 10,
    }
    assert spec.filled({"model": "lecture", "temperature": 0.5, "latent": 2}) == {
        "model": "lecture",
        "temperature": 0.5,
        "latent": 2,
    }
    # The lecture's means: the proper ELBO at T * 64 / latent.
    assert spec.effective_temperature(
        {"model": "lecture", "temperature": 0.01, "latent": 10}
    ) == pytest.approx(0.064)
    assert (
        spec.effective_temperature({"model": "default", "temperature": 0.01, "latent": 10}) == 0.01
    )


def test_negative_elbo_by_hand():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 8, 8))
    # A posterior equal to the prior and a perfect decoder: only the Gaussian's constant is left.
    nelbo, kl, squares = spec.negative_elbo(x, np.zeros((5, 3)), np.zeros((5, 3)), x[None], 0.1)
    np.testing.assert_allclose(nelbo, 32 * math.log(2 * math.pi * 0.1), rtol=1e-12)
    assert np.all(kl == 0) and np.all(squares == 0)
    # One image, one latent: KL = (mu^2 + s^2 - 1 - log s^2) / 2; two draws are averaged.
    mu, logvar = np.array([[0.5]]), np.array([[math.log(0.25)]])
    decoded = np.stack([x[:1] + 0.1, x[:1] - 0.3])
    nelbo, kl, squares = spec.negative_elbo(x[:1], mu, logvar, decoded, 0.05)
    expected_kl = 0.5 * (0.25 + 0.25 - 1 - math.log(0.25))
    expected_squares = 64 * (0.01 + 0.09) / 2
    assert kl[0] == pytest.approx(expected_kl, rel=1e-12)
    assert squares[0] == pytest.approx(expected_squares, rel=1e-12)
    assert nelbo[0] == pytest.approx(
        expected_kl + expected_squares / 0.1 + 32 * math.log(2 * math.pi * 0.05), rel=1e-12
    )


def _outputs(samples, x, mu, logvar, decoded):
    return {"samples": samples, "x": x, "mu": mu, "logvar": logvar, "elbo_decoded": decoded}


def test_judge_reads_samples_and_the_held_out_encodings():
    split = spec.load()
    assert split.y_train is None and split.y_test is None and split.train == (split.x_train,)
    real = digits_split().x_train[:1000, ..., 0]
    x = split.x_test[..., 0]
    rng = np.random.default_rng(1)
    mu = np.concatenate([rng.normal(size=(len(x), 2)), np.zeros((len(x), 8))], axis=1)
    logvar = np.full((len(x), 10), -1.0)
    decoded = np.stack([x, x])
    settings = {"model": "lecture", "temperature": 0.01, "latent": 10, "seed": 0}
    metrics = spec.judge(_outputs(real, x, mu, logvar, decoded), split, settings)
    references = digit_judge.references()["real_training_digits"]
    assert metrics["fd"] < 1.5 and metrics["confidence"] > 0.98  # real digits, as the references
    assert metrics["fd"] == pytest.approx(references["fd"], rel=0.5)
    kl = 0.5 * (np.sum(mu**2, axis=1) + 10 * (math.exp(-1.0) - 1 + 1.0))
    assert metrics["kl"] == pytest.approx(kl.mean(), rel=1e-12)
    assert metrics["reconstruction_mse"] == 0.0
    assert metrics["neg_elbo"] == pytest.approx(kl.mean() + 32 * math.log(2 * math.pi * 0.01))
    assert metrics["effective_temperature"] == pytest.approx(0.064)
    assert metrics["neg_elbo_at_effective_temperature"] == pytest.approx(
        kl.mean() + 32 * math.log(2 * math.pi * 0.064)
    )
    assert metrics["active_latents"] == 2.0  # only two dimensions of mu vary over the data
    assert all(isinstance(v, float) for v in metrics.values())
    default = spec.judge(
        _outputs(real, x, mu, logvar, decoded), split, {**settings, "model": "default"}
    )
    assert "neg_elbo_at_effective_temperature" not in default


@pytest.mark.parametrize(
    "change, what",
    [
        (lambda s: s[:10], "expected (1000, 8, 8)"),
        (lambda s: s + 0.5, "in [0, 1]"),
        (lambda s: np.where(s > 0.5, np.nan, s), "in [0, 1]"),
    ],
)
def test_judge_refuses_samples_it_cannot_read(change, what):
    split = spec.load()
    x = split.x_test[..., 0]
    real = digits_split().x_train[:1000, ..., 0]
    outputs = _outputs(change(real), x, np.zeros((len(x), 8)), np.zeros((len(x), 8)), x[None])
    with pytest.raises(
        RuntimeError,
        match=what.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        spec.judge(outputs, split, {"model": "default", "temperature": 0.1, "latent": 8, "seed": 0})


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--temperature", "0"], "--temperature: expected a number > 0 and <= 10; got '0'"),
        (["--temperature", "x"], "--temperature: expected a number > 0 and <= 10; got 'x'"),
        (["--latent", "0"], "--latent: expected an integer >= 1 and <= 64; got '0'"),
        (["--model", "big"], "--model: expected one of default, lecture (for task vae); got 'big'"),
    ],
)
def test_bad_options_are_one_line(flags, expected, tmp_path):
    assert_usage_error(RUN + flags, str(tmp_path), expected)


def test_list_shows_the_models_options_and_bars(tmp_path):
    proc = customfit("list", cwd=tmp_path)
    assert proc.returncode == 0
    for line in (
        "--model default (default): 300 epochs, batch 64, lr 0.001; bar: fd <= 7.32, confidence >= 0.85",
        "--model lecture: 20 epochs, batch 16, lr 0.001; bar: fd <= 7.32, confidence >= 0.85",
        "--temperature float in (0, 10], default 0.1 for --model default, 0.01 for --model lecture",
        "--latent int in [1, 64], default 8 for --model default, 10 for --model lecture",
        spec.JUDGE,
    ):
        assert line in proc.stdout, line
