"""The judge of generated 8x8 digits (vae, gan, score-digits): the project's own, sharing no code
with any model it judges. Imports scikit-learn and SciPy, no deep-learning framework.

A small classifier (scikit-learn's MLPClassifier, 64-128-64-10, fixed seed) is trained on the
digits training split. For a set of samples (N, 8, 8) in [0, 1] it gives:

- fd: the Frechet distance between the Gaussians fitted to its last hidden layer's features of the
  samples and of the 360 held-out digits (as FID does with Inception features; lower is better);
- confidence: the mean top-class probability (do the samples look like some digit?);
- coverage: the entropy of the predicted-class histogram / log 10 (1 when all ten digits are
  generated equally often).

references() gives the same three figures for real training digits and for a Gaussian fitted to
the training pixels: the floor and a bar that any generative model should beat.
"""

import contextlib
import functools
import io
import os

import numpy as np

HIDDEN = (128, 64)
CACHE_VERSION = 1  # bump when the judge's recipe changes
SAMPLES = 1000


class _Judge:
    """The fitted classifier as plain arrays: the forward pass is NumPy, so a cached judge gives
    the numbers the freshly fitted one gives."""

    def __init__(self, coefs, intercepts):
        self.coefs, self.intercepts = coefs, intercepts

    def features(self, x):
        """The last hidden layer's activations (ReLU)."""
        h = np.asarray(x, np.float64)
        for w, b in zip(self.coefs[:-1], self.intercepts[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return h

    def predict_proba(self, x):
        logits = self.features(x) @ self.coefs[-1] + self.intercepts[-1]
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def cache_folder():
    """The folder of customfit's caches: $CUSTOMFIT_CACHE, else ~/.cache/customfit."""
    return os.environ.get("CUSTOMFIT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "customfit"
    )


def _cache_path():
    """Fitting takes seconds in every process that judges; the weights are cached per scikit-learn
    version (the fit is seeded, so a cache hit gives the same judge)."""
    import sklearn

    name = f"digit_judge-{CACHE_VERSION}-sklearn{sklearn.__version__}.npz"
    return os.path.join(cache_folder(), name)


def _fit():
    from sklearn.neural_network import MLPClassifier

    from customfit.data import digits_split

    split = digits_split()
    model = MLPClassifier(hidden_layer_sizes=HIDDEN, alpha=1e-3, max_iter=600, random_state=0)
    model.fit(split.x_train.reshape(len(split.x_train), -1), split.y_train)
    return _Judge([np.asarray(w) for w in model.coefs_], [np.asarray(b) for b in model.intercepts_])


def _load(path):
    try:
        with np.load(path) as f:
            layers = len(HIDDEN) + 1
            return _Judge([f[f"w{i}"] for i in range(layers)], [f[f"b{i}"] for i in range(layers)])
    except (OSError, KeyError, ValueError):
        return None  # absent or unreadable: fit again and rewrite it


def _save(judge_, path):
    from customfit.checkpoint import atomic_write

    arrays = {f"w{i}": w for i, w in enumerate(judge_.coefs)}
    arrays.update({f"b{i}": b for i, b in enumerate(judge_.intercepts)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, buffer.getvalue())
    except OSError:
        pass  # a read-only home only costs the refit next time


@contextlib.contextmanager
def _one_fitter(path):
    """Held while fitting: processes that judge at once (a matrix's runs, the test workers on an
    empty cache) wait for the first one's fit and load it, rather than each fitting (14 s of CPU)
    side by side."""
    try:
        import fcntl

        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = open(path + ".lock", "w")
    except (ImportError, OSError):
        lock = None  # no file locks here (Windows), or a read-only home
    if lock is None:
        yield  # each process fits for itself, as before
        return
    with lock:
        with contextlib.suppress(OSError):  # a file system without locks: as above
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@functools.lru_cache(maxsize=1)
def _judge_model():
    from customfit.data import digits_split

    path = _cache_path()
    model = _load(path)
    if model is None:
        with _one_fitter(path):
            model = _load(path)  # fitted by another process while this one waited
            if model is None:
                model = _fit()
                _save(model, path)
    split = digits_split()
    held_out = split.x_test.reshape(len(split.x_test), -1)
    accuracy = float((model.predict_proba(held_out).argmax(axis=1) == split.y_test).mean())
    return model, model.features(held_out), accuracy


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between Gaussians fitted to rows."""
    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    # ReLU units that never fire give a singular covariance; a tiny ridge keeps sqrtm stable.
    ridge = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def check_samples(samples, count, nan_out_of_range=False):
    """Raise RuntimeError unless `samples` are `count` finite 8x8 digits in [0, 1]; the message
    gives the range found (leaving NaN out of it when nan_out_of_range)."""
    if (
        samples.shape != (count, 8, 8)
        or not np.isfinite(samples).all()
        or samples.min() < 0.0
        or samples.max() > 1.0
    ):
        low, high = (np.nanmin, np.nanmax) if nan_out_of_range else (np.min, np.max)
        raise RuntimeError(
            f"samples: expected ({count}, 8, 8) in [0, 1], given shape "
            f"{samples.shape}, range [{low(samples)}, {high(samples)}]"
        )


def judge(samples):
    """{"fd", "confidence", "coverage"} for samples of shape (N, 8, 8) or (N, 8, 8, 1) in [0, 1]."""
    samples = np.asarray(samples, np.float64)
    if samples.ndim == 4 and samples.shape[-1] == 1:
        samples = samples[..., 0]
    if samples.ndim != 3 or samples.shape[1:] != (8, 8):
        raise ValueError(f"samples: expected shape (N, 8, 8); got {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("samples: expected finite values; got NaN or inf")
    model, held_out_features, _ = _judge_model()
    flat = samples.reshape(len(samples), -1)
    proba = model.predict_proba(flat)
    histogram = np.bincount(proba.argmax(axis=1), minlength=10) / len(samples)
    nonzero = histogram[histogram > 0]
    return {
        "fd": frechet_distance(model.features(flat), held_out_features),
        "confidence": float(proba.max(axis=1).mean()),
        "coverage": float(-(nonzero * np.log(nonzero)).sum() / np.log(10)) + 0.0,  # no -0.0
    }


@functools.lru_cache(maxsize=1)
def references(n=SAMPLES, seed=0):
    """The judge's figures for n real training digits and for n draws of a Gaussian fitted to the
    training pixels (clipped to [0, 1]), plus the judge classifier's own held-out accuracy."""
    from customfit.data import digits_split

    split = digits_split()
    rng = np.random.default_rng(seed)
    pixels = split.x_train.reshape(len(split.x_train), -1).astype(np.float64)
    real = pixels[rng.choice(len(pixels), size=min(n, len(pixels)), replace=False)]
    gaussian = rng.multivariate_normal(pixels.mean(axis=0), np.cov(pixels, rowvar=False), size=n)
    return {
        "real_training_digits": judge(real.reshape(-1, 8, 8)),
        "pixel_gaussian": judge(np.clip(gaussian, 0.0, 1.0).reshape(-1, 8, 8)),
        "judge_accuracy": _judge_model()[2],
    }


def beside(lecture_name, lecture_figures):
    """What a generative run's figures are printed beside: real training digits (the floor), the
    pixel Gaussian (a bar any model should beat) and the lecture's own model, as measured."""
    known = references()
    return {
        "real training digits": known["real_training_digits"],
        "pixel Gaussian": known["pixel_gaussian"],
        lecture_name: dict(lecture_figures),
    }
