"""
Title: A variational autoencoder of handwritten digits
Author: customfit
Description: Encode 8x8 digits into a small Gaussian latent space, decode them back, and train
    both networks on the evidence lower bound, with its two terms shown as metrics.
Shows: an objective that draws random numbers (a `keras.random.SeedGenerator`, so that it runs
    inside a compiled step on every backend) and returns named parts beside its loss.
Run: KERAS_BACKEND=jax python examples/vae.py   (tensorflow and torch too; CUSTOMFIT_QUICK=1
    for a brief run)
"""

"""
## Setup
"""

import os

import keras
import numpy as np
from keras import ops
from sklearn.datasets import load_digits

import customfit as cf

QUICK = os.environ.get("CUSTOMFIT_QUICK") == "1"
keras.utils.set_random_seed(0)

"""
## Data: scikit-learn's 1797 digits, pixels scaled to [0, 1]
"""

digits = load_digits().data.astype("float32") / 16.0
order = np.random.default_rng(0).permutation(len(digits))
x_train, x_test = digits[order[:1500]], digits[order[1500:]]

"""
## The model

The encoder gives each image a mean and a log-variance in an 8-dimensional latent space; one
latent point is drawn from them (the reparameterisation trick: mean + noise * scale, so the draw
stays differentiable); the decoder gives every pixel a probability of ink. The loss is the
negative evidence lower bound, per image: the pixels' binary cross-entropy plus the KL divergence
of the posterior from the standard normal prior.
"""


class VAE(cf.Model):
    def __init__(self, latent=8):
        super().__init__()
        self.encoder = keras.Sequential(
            [
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dense(2 * latent),
            ]
        )
        self.decoder = keras.Sequential(
            [
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(64),
            ]
        )
        self.latent = latent
        self.noise = keras.random.SeedGenerator(1)

    def objective(self, x, training=True):
        mean, log_var = ops.split(self.encoder(x, training=training), 2, axis=-1)
        z = mean + ops.exp(0.5 * log_var) * keras.random.normal(ops.shape(mean), seed=self.noise)
        logits = self.decoder(z, training=training)
        reconstruction = ops.sum(
            keras.losses.binary_crossentropy(x[..., None], logits[..., None], from_logits=True),
            axis=-1,
        )
        kl = 0.5 * ops.sum(ops.square(mean) + ops.exp(log_var) - 1.0 - log_var, axis=-1)
        return {
            "loss": ops.mean(reconstruction + kl),
            "reconstruction": ops.mean(reconstruction),
            "kl": ops.mean(kl),
        }

    def sample(self, n, seed=0):
        z = keras.random.normal((n, self.latent), seed=seed)
        return ops.sigmoid(self.decoder(z))


"""
## Training
"""

model = VAE()
model.compile(optimizer=keras.optimizers.Adam(1e-3))
n = 320 if QUICK else len(x_train)  # a brief run: a fifth of the data, two epochs
model.fit(x_train[:n], epochs=2 if QUICK else 150, batch_size=64, verbose=0 if QUICK else 2)

"""
## The result

The negative ELBO of the 297 held-out digits (nats per image, lower is better), beside the
cross-entropy of the best model that treats pixels as independent (each pixel's mean ink).
"""

held_out = model.evaluate(x_test, batch_size=len(x_test), return_dict=True, verbose=0)
p = np.clip(x_train.mean(axis=0), 1e-3, 1 - 1e-3)
independent = float(-np.mean(np.sum(x_test * np.log(p) + (1 - x_test) * np.log(1 - p), axis=1)))
samples = ops.convert_to_numpy(model.sample(16))
print(
    f"held-out negative ELBO {held_out['loss']:.2f} (reconstruction "
    f"{held_out['reconstruction']:.2f} + KL {held_out['kl']:.2f}); independent pixels "
    f"{independent:.2f}; samples in [{samples.min():.2f}, {samples.max():.2f}]"
)
bar = 64 * np.log(2) if QUICK else 25.0  # quick: below a coin flip per pixel
assert held_out["loss"] < bar, f"negative ELBO {held_out['loss']:.2f} is not below {bar:.2f}"
