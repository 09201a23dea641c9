"""The lecture's data sets, as NumPy arrays (float32 inputs, int64 labels).

No framework is imported here: every engine batches these arrays in its own idiom.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Training and held-out arrays. Unlabelled data (a generative task's) has y_* = None."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    num_classes: int | None = None

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def train(self):
        """What a Trainer's train_epoch takes: (x, y), or (x,) for unlabelled data."""
        return (self.x_train,) if self.y_train is None else (self.x_train, self.y_train)

    @property
    def test(self):
        return (self.x_test,) if self.y_test is None else (self.x_test, self.y_test)


def toy_clusters(n=3000, k=5, spread=0.2, centre_seed=3, sample_seed=0):
    """The lecture's toy set: k Gaussian clusters in 2-D, centres from default_rng(seed=3)."""
    centres = np.random.default_rng(seed=centre_seed).normal(0.0, 1.0, size=(k, 2))
    rng = np.random.default_rng(sample_seed)
    labels = rng.integers(0, k, size=n)
    points = centres[labels] + spread * rng.normal(size=(n, 2))
    return points.astype(np.float32), labels.astype(np.int64), centres.astype(np.float32)


def toy_split(test_fraction=0.2):
    """Train on the lecture's 3000 points; judge on fresh points drawn from the same clusters."""
    x, y, _ = toy_clusters(sample_seed=0)
    n_test = int(len(x) * test_fraction)
    x_test, y_test, _ = toy_clusters(n=n_test, sample_seed=1)
    return Split(x, y, x_test, y_test, num_classes=5)


def digits_split():
    """scikit-learn's 8x8 digits, scaled to [0, 1], NHWC, split 80/20 with random_state=1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.2, random_state=1
    )
    return Split(x_train, y_train, x_test, y_test, num_classes=10)


def unlabelled_digits_split():
    """The same split without its labels: what the generative tasks (vae, gan) learn from."""
    split = digits_split()
    return Split(split.x_train, None, split.x_test, None)


def epoch_seed(seed, epoch):
    """One integer per (run seed, epoch): every engine shuffles epoch e the same way on a rerun
    or a resume, without carrying a random-number generator's state in the checkpoint."""
    return int(np.random.default_rng([seed, epoch]).integers(2**31 - 1))
