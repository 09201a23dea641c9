"""
Title: WGAN-GP on a ring of eight Gaussians
Author: customfit
Description: A Wasserstein GAN with gradient penalty: a critic and a generator, each with its
    own optimizer, the critic updated five times for every generator update.
Shows: `updates()` returning `cf.Update` entries (which objective trains which sub-model, with
    which optimizer, how often), and a gradient penalty taken with `cf.ops.grad` inside the
    objective and differentiated again by the training step.
Run: KERAS_BACKEND=jax python examples/wgan_gp.py   (tensorflow and torch too; CUSTOMFIT_QUICK=1
    for a brief run)
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
## Data: eight Gaussians on a circle of radius 2
"""

MODES = 2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)
rng = np.random.default_rng(0)
points = (MODES[rng.integers(0, 8, 25600)] + 0.05 * rng.normal(size=(25600, 2))).astype("float32")

"""
## The model

The critic scores points; it learns to score real points high and generated ones low, while the
penalty keeps the norm of its gradient (with respect to its input, at points between real and
generated ones) near 1. The generator learns to make points the critic scores high.
"""


def mlp(outputs):
    return keras.Sequential(
        [
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(outputs),
        ]
    )


class WGANGP(cf.Model):
    def __init__(self, penalty=10.0):
        super().__init__()
        self.critic, self.generator = mlp(1), mlp(2)
        self.penalty = penalty
        self.noise = keras.random.SeedGenerator(1)

    def generate(self, n):
        return self.generator(keras.random.normal((n, 2), seed=self.noise))

    def critic_objective(self, real, training=True):
        fake = self.generate(ops.shape(real)[0])
        t = keras.random.uniform((ops.shape(real)[0], 1), seed=self.noise)
        between = t * real + (1.0 - t) * fake
        slopes = cf.ops.grad(lambda v: ops.sum(self.critic(v)))(between)
        norm = ops.sqrt(ops.sum(ops.square(slopes), axis=1) + 1e-12)
        distance = ops.mean(self.critic(real)) - ops.mean(self.critic(fake))
        return {
            "loss": -distance + self.penalty * ops.mean(ops.square(norm - 1.0)),
            "distance": distance,
        }

    def generator_objective(self, real, training=True):
        return -ops.mean(self.critic(self.generate(ops.shape(real)[0])))

    def updates(self):
        return [
            cf.Update("critic", self.critic_objective, self.critic, repeat=5),
            cf.Update("generator", self.generator_objective, self.generator),
        ]


"""
## Training: one optimizer per update, named as in `updates()`
"""

model = WGANGP()
model.compile(
    optimizer={
        "critic": keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.9),
        "generator": keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.9),
    }
)
n = 1280 if QUICK else len(points)  # a brief run: five batches
model.fit(points[:n], epochs=1 if QUICK else 20, batch_size=256, verbose=0 if QUICK else 2)

"""
## The result

Of 2000 generated points, the share that lies within 0.25 of one of the eight modes, and how
many modes receive at least 5% of the points.
"""

samples = ops.convert_to_numpy(model.generate(2000))
distance = np.linalg.norm(samples[:, None, :] - MODES[None], axis=-1)
near = distance.min(axis=1) < 0.25
share = float(near.mean())
covered = int(np.sum(np.bincount(distance.argmin(axis=1)[near], minlength=8) >= 0.05 * 2000))
print(f"{share:.3f} of the samples lie within 0.25 of a mode; {covered} of 8 modes covered")
bar = (0.0, 0) if QUICK else (0.6, 8)
assert np.isfinite(samples).all(), "the generator's samples are not finite"
assert share >= bar[0] and covered >= bar[1], f"{share:.3f} near, {covered} modes: below {bar}"
