"""The digit judge's cache: a judge loaded from it gives the figures a fresh fit gives, and an
unreadable cache file is fitted again and rewritten, not trusted."""

import numpy as np
import pytest

from customfit.tasks import digit_judge


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTOMFIT_CACHE", str(tmp_path))
    digit_judge._judge_model.cache_clear()
    yield tmp_path
    digit_judge._judge_model.cache_clear()


def _samples():
    rng = np.random.default_rng(3)
    return rng.uniform(0, 1, size=(200, 8, 8))


def test_cached_judge_equals_the_fitted_one(fresh_cache, monkeypatch):
    fitted = digit_judge.judge(_samples())
    assert list(fresh_cache.iterdir()) == [
        fresh_cache.joinpath(digit_judge._cache_path().rsplit("/", 1)[1])
    ]
    digit_judge._judge_model.cache_clear()

    def no_fit():
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(digit_judge, "_fit", no_fit)
    assert digit_judge.judge(_samples()) == fitted
    assert digit_judge._judge_model()[2] == pytest.approx(0.9833, abs=1e-4)  # held-out accuracy


def test_unreadable_cache_is_fitted_again(fresh_cache, monkeypatch):
    path = digit_judge._cache_path()
    with open(path, "wb") as f:
        f.write(b"not an npz file")
    reference = digit_judge._Judge(
        [np.zeros((64, 128)), np.zeros((128, 64)), np.zeros((64, 10))],
        [np.zeros(128), np.zeros(64), np.zeros(10)],
    )
    monkeypatch.setattr(digit_judge, "_fit", lambda: reference)
    figures = digit_judge.judge(_samples())
    assert figures["confidence"] == pytest.approx(0.1)  # the stand-in's uniform answer
    assert figures["coverage"] == 0.0 and str(figures["coverage"]) == "0.0"  # one class, no -0.0
    assert digit_judge._load(path).coefs[2].shape == (64, 10)  # rewritten with the refit
