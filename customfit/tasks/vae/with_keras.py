"""The VAE as a cf.Model: its objective is written once, with keras.ops, and compile()/fit()
train it on whichever Keras backend this process runs (keras-tensorflow, keras-torch, keras-jax).
It is the lecture's exercise 5 (and keras-io's VAE example) without a hand-written train_step:
the encoder and decoder are keras.Model subclasses, the noise comes from a SeedGenerator, and
`objective` returns the loss with its parts, which fit() shows and evaluate() returns. Seeds,
devices, checkpoints and the parity hook: customfit/trainers/keras_trainer.py."""

import keras
import numpy as np
from keras import layers
from keras import ops as K

import customfit as cf
from customfit.core.model import build_train_step
from customfit.parallel.keras_fit import own_rows
from customfit.tasks.vae import layout
from customfit.trainers.keras_trainer import KerasTrainer, float32, tensor, to_numpy


# --8<-- [start:model]
class MLPEncoder(keras.Model):
    def __init__(self, latent):
        super().__init__(name="encoder")
        h1, h2 = layout.MLP_HIDDEN
        self.flatten = layers.Flatten()
        self.hidden1 = layers.Dense(h1, activation="relu")
        self.hidden2 = layers.Dense(h2, activation="relu")
        self.mu, self.logvar = layers.Dense(latent), layers.Dense(latent)

    def call(self, x):
        h = self.hidden2(self.hidden1(self.flatten(x)))
        return float32(self.mu(h)), float32(self.logvar(h))


class MLPDecoder(keras.Model):
    def __init__(self, latent):
        super().__init__(name="decoder")
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = layers.Dense(h2, activation="relu")
        self.hidden2 = layers.Dense(h1, activation="relu")
        self.out = layers.Dense(layout.PIXELS, activation="sigmoid")
        self.reshape = layers.Reshape(layout.IMAGE)

    def call(self, z):
        return float32(self.reshape(self.out(self.hidden2(self.hidden1(z)))))


class ConvEncoder(keras.Model):
    """The lecture's Encoder: three 3x3 valid convolutions (4, 8, 16), then mu and log-variance."""

    def __init__(self, latent):
        super().__init__(name="encoder")
        f1, f2, f3 = layout.CONV_FILTERS
        self.c1 = layers.Conv2D(f1, 3, padding="valid", activation="relu")
        self.c2 = layers.Conv2D(f2, 3, padding="valid", activation="relu")
        self.c3 = layers.Conv2D(f3, 3, padding="valid", activation="relu")
        self.fl = layers.Flatten()
        self.l_mu, self.l_l = layers.Dense(latent), layers.Dense(latent)

    def call(self, x):
        h = self.fl(self.c3(self.c2(self.c1(x))))
        return float32(self.l_mu(h)), float32(self.l_l(h))


class ConvDecoder(keras.Model):
    """The lecture's Decoder: dense 256, reshape 4x4x16, conv-transposes 8, 4 (2x2), 1 (3x3)."""

    def __init__(self, latent):
        super().__init__(name="decoder")
        spec = layout.CONV_DECODER
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.l1 = layers.Dense(spec["dense"], activation="relu")
        self.re = layers.Reshape(spec["reshape"])
        self.c1 = layers.Conv2DTranspose(f1, k1, padding="valid")
        self.c2 = layers.Conv2DTranspose(f2, k2, padding="valid")
        self.c3 = layers.Conv2DTranspose(f3, k3, padding="valid", activation="sigmoid")

    def call(self, z):
        h = self.re(self.l1(z))
        # The lecture's activation="leaky_relu" has Keras's slope 0.2; said explicitly.
        h = K.leaky_relu(self.c1(h), negative_slope=layout.LEAKY_SLOPE)
        h = K.leaky_relu(self.c2(h), negative_slope=layout.LEAKY_SLOPE)
        return float32(self.c3(h))


# --8<-- [end:model]


# --8<-- [start:objective]
class VAE(cf.Model):
    def __init__(self, network, objective, latent, temperature, seed):
        super().__init__()
        self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent)
        self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent)
        self.noise = keras.random.SeedGenerator(seed)
        self.latent, self.temperature, self.kind = latent, float(temperature), objective

    def call(self, x, training=False):
        """The reconstruction of x through the posterior's mean."""
        mu, _ = self.encoder(x, training=training)
        return self.decoder(mu, training=training)

    def objective(self, x, training=True):
        return self.figures(x, training=training)

    def figures(self, x, eps=None, training=True):
        """loss = kl + reconstruction (see layout's docstring), and the negative ELBO per image
        of the Gaussian decoder of variance T, constant included. The encoder runs once."""
        mu, logvar = self.encoder(x, training=training)
        if eps is None:  # on several devices, this replica's share of the global batch's
            eps = own_rows(
                lambda n: keras.random.normal((n, self.latent), seed=self.noise), K.shape(mu)[0]
            )
        x_hat = self.decoder(mu + eps * K.exp(0.5 * logvar), training=training)
        T = self.temperature
        kl_terms = 0.5 * (K.square(mu) + K.exp(logvar) - 1.0 - logvar)
        squares = K.square(x - x_hat)
        kl_per_image = K.sum(kl_terms, axis=1)
        squares_per_image = K.sum(squares, axis=(1, 2, 3))
        if self.kind == "elbo":
            kl = K.mean(kl_per_image)
            reconstruction = K.mean(squares_per_image) / (2.0 * T)
        else:  # the lecture's: means over the batch and the dimensions alike
            kl = K.mean(kl_terms)
            reconstruction = K.mean(squares) / (2.0 * T)
        constant = layout.gaussian_constant(T)  # the Gaussian's normalisation, per image
        neg_elbo = K.mean(kl_per_image + squares_per_image / (2.0 * T)) + constant
        loss = kl + reconstruction
        return {"loss": loss, "kl": kl, "reconstruction": reconstruction, "neg_elbo": neg_elbo}


# --8<-- [end:objective]


# --8<-- [start:step]
class Trainer(KerasTrainer):
    """The VAE compiled with Adam; KerasTrainer.train_epoch fits it an epoch at a time, its noise
    reseeded from the epoch's seed."""

    figure_names = layout.FIGURES

    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        super().__init__(seed, devices)
        self.network, self.objective, self.latent = network, objective, latent
        self._shapes = layout.canonical_shapes(network, latent)
        with self.parallel.scope():
            self.model = VAE(network, objective, latent, temperature, seed)
            self.model.decoder(self.model.encoder(K.zeros((1, *layout.IMAGE)))[0])  # both built now
            self.model.compile(optimizer=keras.optimizers.Adam(lr, **layout.ADAM))
            build_train_step(self.model, (np.zeros((1, *layout.IMAGE), "float32"),))
        self._variables = self.trainable_of(self.model, self.model.encoder, self.model.decoder)

    # --8<-- [end:step]

    # ---- what the spec asks after training

    def encode(self, x):
        return tuple(to_numpy(h) for h in self.model.encoder(tensor(x)))  # mu, log-variance

    def decode(self, z):
        return to_numpy(self.model.decoder(tensor(z)))[..., 0]

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z drawn by keras.random with seed."""
        z = keras.random.normal((n, self.latent), seed=keras.random.SeedGenerator(seed))
        return self.decode(scale * K.convert_to_numpy(z))

    # ---- weights, the parity hook, state: Keras's layout is the canonical one

    def split(self, arrays):
        n = len(self.model.encoder.trainable_variables)
        return {"encoder": list(arrays[:n]), "decoder": list(arrays[n:])}

    def get_weights(self):
        return layout.copied({net: getattr(self.model, net).get_weights() for net in layout.NETS})

    def set_weights(self, weights):
        layout.check_weights(self._shapes, weights)
        self.model.encoder.set_weights(weights["encoder"])
        self.model.decoder.set_weights(weights["decoder"])

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,) with the
        reparameterisation noise `noise` (B, latent) given; no update."""
        args = (self._variables, tensor(batch[0]), tensor(noise))
        loss, grads = self.value_and_grads(lambda x, e: self.model.figures(x, eps=e)["loss"], *args)
        return loss, layout.copied(self.split(grads))

    def state(self):
        first, second, step = self.adam_state(self.model.optimizer, self._variables)
        arrays = layout.pack_state(self.get_weights(), self.split(first), self.split(second), step)
        return arrays, layout.state_meta(self.engine, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self._shapes)
        self.set_weights(weights)
        first, second = (m["encoder"] + m["decoder"] for m in (first, second))
        self.load_adam_state(self.model.optimizer, self._variables, first, second, step)
