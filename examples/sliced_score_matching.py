"""
Title: Sliced score matching
Author: customfit
Description: Learn the score (the gradient of the log-density) of a mixture of Gaussians from
    samples alone, then check it against the true score, which this mixture has in closed form.
Shows: `cf.ops.divergence(f, x, method="hutchinson", seed=...)`: the divergence of a network's
    output with respect to its input, from one random projection per sample, inside the
    objective, on every backend.
Run: KERAS_BACKEND=jax python examples/sliced_score_matching.py   (tensorflow and torch too;
    CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import os

import keras
import numpy as np
from keras import ops

import customfit as cf

QUICK = os.environ.get("CUSTOMFIT_QUICK") == "1"
keras.utils.set_random_seed(0)

"""
## Data: four Gaussians on the corners of a square
"""

CENTRES = np.array([[-1.5, -1.5], [-1.5, 1.5], [1.5, -1.5], [1.5, 1.5]])
SPREAD = 0.6
rng = np.random.default_rng(0)
x = (CENTRES[rng.integers(0, 4, 20000)] + SPREAD * rng.normal(size=(20000, 2))).astype("float32")
x_train, x_test = x[:16000], x[16000:]


def true_score(x):
    """grad log p(x) of the mixture: the components' scores, weighted by their responsibilities."""
    d = CENTRES[None] - x[:, None, :]  # (n, 4, 2)
    logits = -np.sum(d**2, axis=-1) / (2 * SPREAD**2)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.sum(weights[..., None] * d, axis=1) / SPREAD**2


"""
## The model

For a score network s, E[|s(x)|^2 / 2 + div s(x)] equals the distance of s from the true score
up to a constant (Hyvarinen's score matching), with no need to know the density. The divergence
costs one gradient per dimension; Hutchinson's estimator gets an unbiased value from one:
v . d(s . v)/dx for a random sign vector v (slicing the score along v).
"""


class ScoreModel(cf.Model):
    def __init__(self):
        super().__init__()
        self.net = keras.Sequential(
            [
                keras.layers.Dense(128, activation="softplus"),
                keras.layers.Dense(128, activation="softplus"),
                keras.layers.Dense(2),
            ]
        )
        self.probe = keras.random.SeedGenerator(1)

    def call(self, x):
        return self.net(x)

    def objective(self, x, training=True):
        divergence = cf.ops.divergence(self.net, x, method="hutchinson", seed=self.probe)
        norm = 0.5 * ops.sum(ops.square(self.net(x)), axis=1)
        return {"loss": ops.mean(norm + divergence), "divergence": ops.mean(divergence)}


epochs = 4 if QUICK else 40
if QUICK:  # a brief run: 1280 samples, four epochs
    x_train = x_train[:1280]
model = ScoreModel()
# A decaying step: Hutchinson's estimate is noisy, and a smaller step at the end averages it out.
schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=epochs * len(x_train) // 128)
model.compile(optimizer=keras.optimizers.Adam(schedule))
model.fit(x_train, epochs=epochs, batch_size=128, verbose=0 if QUICK else 2)

"""
## The result

The learned score against the true one on held-out samples: the mean squared error relative to
the true score's mean square (0 is perfect; a network that answers 0 everywhere scores 1).
"""

learned = ops.convert_to_numpy(model.predict(x_test, verbose=0))
truth = true_score(x_test)
relative = float(np.mean(np.sum((learned - truth) ** 2, 1)) / np.mean(np.sum(truth**2, 1)))
print(f"relative squared error of the learned score: {relative:.4f}")
bar = 0.95 if QUICK else 0.05
assert relative < bar, f"relative squared error {relative:.4f} is not below {bar}"
