"""The digit judge's cache: a judge loaded from it gives the figures a fresh fit gives, and an
unreadable cache file is fitted again and rewritten, not trusted."""

import os
import subprocess
import sys

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
    assert list(fresh_cache.glob("*.npz")) == [
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


# Each process counts its fits in a file; its fit is a stand-in that takes 2 s, so that the two
# processes' fits would overlap.
COUNTED_FIT = """
import os, sys, time
import numpy as np
from customfit.tasks import digit_judge

def counted_fit():
    with open(os.path.join(sys.argv[1], "fits"), "a") as f:
        f.write("fit\\n")
    time.sleep(2)
    shapes = [(64, 128), (128, 64), (64, 10)]
    return digit_judge._Judge([np.ones(s) for s in shapes], [np.zeros(s[1]) for s in shapes])

digit_judge._fit = counted_fit
print(digit_judge._judge_model()[0].coefs[0].sum())
"""


def test_processes_judging_at_once_fit_the_judge_once(fresh_cache):
    """Started together on an empty cache, the second waits for the first one's fit and loads it
    (without the lock each would fit, 14 s of CPU apiece)."""
    env = dict(os.environ, CUSTOMFIT_CACHE=str(fresh_cache))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COUNTED_FIT, str(fresh_cache)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert [float(out) for out, _ in outputs] == [64.0 * 128] * 2  # both hold the one judge
    assert (fresh_cache / "fits").read_text() == "fit\n"
