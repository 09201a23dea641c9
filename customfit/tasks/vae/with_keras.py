"""The VAE as a cf.Model: its objective is written once, with keras.ops, and compile()/fit()
train it on whichever Keras backend this process runs (the keras-tensorflow, keras-torch and
keras-jax engines). It is the lecture's exercise 5 (and keras-io's VAE example) without a
hand-written train_step: the encoder and decoder are keras.Model subclasses with named layers,
the noise comes from a keras.random.SeedGenerator, and `objective` returns the loss with its
parts, which fit() shows and evaluate() returns.

The SeedGenerator's state is set from the loop's seed at the start of each epoch (and of each
evaluation): an epoch's noise is then a function of the run's seed and the epoch alone, so a
resumed run draws what an uninterrupted one drew.
"""

import keras
import numpy as np
from keras import layers
from keras import ops as K

import customfit as cf
from customfit import weights as keras_weights
from customfit.parallel.keras_fit import DataParallel, own_rows
from customfit.tasks.vae import layout


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return K.cast(h, "float32")


class MLPEncoder(keras.Model):
    def __init__(self, latent):
        super().__init__(name="encoder")
        h1, h2 = layout.MLP_HIDDEN
        self.flatten = layers.Flatten()
        self.hidden1 = layers.Dense(h1, activation="relu")
        self.hidden2 = layers.Dense(h2, activation="relu")
        self.mu = layers.Dense(latent)
        self.logvar = layers.Dense(latent)

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
        self.l_mu = layers.Dense(latent)
        self.l_l = layers.Dense(latent)

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
            eps = own_rows(lambda n: keras.random.normal((n, self.latent), seed=self.noise),
                           K.shape(mu)[0])
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
        neg_elbo = K.mean(kl_per_image + squares_per_image / (2.0 * T)) + layout.gaussian_constant(T)
        return {"loss": kl + reconstruction, "kl": kl, "reconstruction": reconstruction,
                "neg_elbo": neg_elbo}


class _Progress(keras.callbacks.Callback):
    def __init__(self, on_batch):
        super().__init__()
        self.on_batch = on_batch

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch(_in_order(logs))


def _in_order(figures):
    # Keras hands the objective's dict back sorted by name; show it in the native engines' order.
    return {k: float(figures[k]) for k in layout.FIGURES}


class Trainer:
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        self.engine = f"keras-{keras.backend.backend()}"
        self.network, self.objective, self.latent, self.seed = network, objective, latent, seed
        self._shapes = layout.canonical_shapes(network, latent)
        # One device, or the backend's own data parallelism (customfit/parallel/keras_fit.py).
        self.parallel = DataParallel(devices)
        keras.utils.set_random_seed(seed)
        with self.parallel.scope():
            self.model = VAE(network, objective, latent, temperature, seed)
            self.model.encoder(K.zeros((1, *layout.IMAGE)))  # build the weights now
            self.model.decoder(K.zeros((1, latent)))
            self.model.compile(optimizer=keras.optimizers.Adam(lr, **layout.ADAM))
            # Build the step (trackers, optimizer slots) now, so that load_state can fill them.
            self.model._symbolic_build(data_batch=(np.zeros((1, *layout.IMAGE), "float32"),))
        self._variables = (self.model.encoder.trainable_variables
                           + self.model.decoder.trainable_variables)
        if [id(v) for v in self._variables] != [id(v) for v in self.model.trainable_variables]:
            raise RuntimeError("the VAE's trainable variables are not the encoder's then the decoder's")

    def _reseed(self, seed):
        state = self.model.noise.state
        state.assign(np.asarray([seed, 0], dtype=state.dtype))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # fit() shuffles from Keras's global random state; the permutation from shuffle_seed
        # makes an epoch's batches a function of the seed alone, so a resumed run repeats them.
        order = self.parallel.epoch_order(np.random.default_rng(shuffle_seed).permutation(len(x)),
                                            batch_size)
        self._reseed(shuffle_seed)
        with self.parallel.scope():
            history = self.model.fit(x[order], batch_size=self.parallel.batch_size(batch_size),
                                     epochs=1, shuffle=False, verbose=0,
                                     callbacks=[_Progress(on_batch)])
        return _in_order(self.parallel.means_over_devices(
            {k: v[-1] for k, v in history.history.items()}))

    def evaluate(self, x, batch_size):
        self._reseed(self.seed)  # the same held-out noise at every call
        return _in_order(self.model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True))

    # ---- what the spec asks after training

    def encode(self, x):
        mu, logvar = self.model.encoder(K.convert_to_tensor(np.asarray(x, "float32")))
        return np.asarray(K.convert_to_numpy(mu)), np.asarray(K.convert_to_numpy(logvar))

    def decode(self, z):
        x = self.model.decoder(K.convert_to_tensor(np.asarray(z, "float32")))
        return np.asarray(K.convert_to_numpy(x))[..., 0]

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z drawn by keras.random with seed."""
        z = keras.random.normal((n, self.latent), seed=keras.random.SeedGenerator(seed))
        return self.decode(scale * K.convert_to_numpy(z))

    # ---- weights, the parity hook, state

    def _split(self, arrays):
        n = len(self.model.encoder.trainable_variables)
        return {"encoder": list(arrays[:n]), "decoder": list(arrays[n:])}

    def get_weights(self):
        return layout.copied({"encoder": self.model.encoder.get_weights(),
                              "decoder": self.model.decoder.get_weights()})

    def set_weights(self, weights):
        layout.check_weights(self._shapes, weights)
        self.model.encoder.set_weights(weights["encoder"])
        self.model.decoder.set_weights(weights["decoder"])

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,) with the
        reparameterisation noise `noise` (B, latent) given; no update."""
        (x,) = batch
        x, eps = K.convert_to_tensor(np.asarray(x, "float32")), K.convert_to_tensor(
            np.asarray(noise, "float32"))
        variables = self._variables

        def loss_of(*values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self.model.figures(x, eps=eps)["loss"]

        argnums = tuple(range(len(variables)))
        loss, grads = cf.ops.value_and_grad(loss_of, argnums=argnums)(*[v.value for v in variables])
        grads = [np.asarray(K.convert_to_numpy(g)) for g in grads]
        return float(K.convert_to_numpy(loss)), layout.copied(self._split(grads))

    def state(self):
        momentums, velocities = keras_weights.keras_adam_slots(self.model.optimizer, self._variables)
        numpy = lambda vs: [np.asarray(K.convert_to_numpy(v.value)) for v in vs]  # noqa: E731
        arrays = layout.pack_state(
            self.get_weights(), self._split(numpy(momentums)), self._split(numpy(velocities)),
            int(K.convert_to_numpy(self.model.optimizer.iterations.value)))
        return arrays, layout.state_meta(self.engine, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self._shapes)
        self.set_weights(weights)
        momentums, velocities = keras_weights.keras_adam_slots(self.model.optimizer, self._variables)
        for variables, values in ((momentums, first), (velocities, second)):
            for variable, value in zip(variables, values["encoder"] + values["decoder"]):
                variable.assign(value)
        self.model.optimizer.iterations.assign(step)
