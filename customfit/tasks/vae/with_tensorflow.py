"""The VAE in TensorFlow, the lecture's way: tf.keras.Model subclasses for the encoder and the
decoder, a training step written by hand with tf.GradientTape under @tf.function, tf.data batches.

Read top to bottom: the networks, the objective, the step and the epoch loop; the plumbing is
tensorflow_trainer.py's. Two fixes to the lecture's exercise 5: the encoder runs once per step;
the noise comes from a tf.random.Generator re-seeded every epoch (resumable)."""

import tensorflow as tf

from customfit.tasks.vae import layout
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.tensorflow_trainer import ENGINE, TensorFlowTrainer, built_adam, float32


# --8<-- [start:model]
class MLPEncoder(tf.keras.Model):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.flatten = tf.keras.layers.Flatten()
        self.hidden1 = tf.keras.layers.Dense(h1, activation="relu")
        self.hidden2 = tf.keras.layers.Dense(h2, activation="relu")
        self.mu, self.logvar = tf.keras.layers.Dense(latent), tf.keras.layers.Dense(latent)

    def call(self, x):
        h = self.hidden2(self.hidden1(self.flatten(x)))
        return float32(self.mu(h)), float32(self.logvar(h))


class MLPDecoder(tf.keras.Model):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = tf.keras.layers.Dense(h2, activation="relu")
        self.hidden2 = tf.keras.layers.Dense(h1, activation="relu")
        self.out = tf.keras.layers.Dense(layout.PIXELS, activation="sigmoid")
        self.reshape = tf.keras.layers.Reshape(layout.IMAGE)

    def call(self, z):
        return float32(self.reshape(self.out(self.hidden2(self.hidden1(z)))))


class ConvEncoder(tf.keras.Model):
    """The lecture's Encoder: three 3x3 valid convolutions (4, 8, 16), then mu and log-variance."""

    def __init__(self, latent):
        super().__init__()
        f1, f2, f3 = layout.CONV_FILTERS
        self.c1 = tf.keras.layers.Conv2D(f1, 3, padding="valid", activation="relu")
        self.c2 = tf.keras.layers.Conv2D(f2, 3, padding="valid", activation="relu")
        self.c3 = tf.keras.layers.Conv2D(f3, 3, padding="valid", activation="relu")
        self.flatten = tf.keras.layers.Flatten()
        self.mu, self.logvar = tf.keras.layers.Dense(latent), tf.keras.layers.Dense(latent)

    def call(self, x):
        h = self.flatten(self.c3(self.c2(self.c1(x))))
        # The lecture returned (mu, ll): a NameError.
        return float32(self.mu(h)), float32(self.logvar(h))


class ConvDecoder(tf.keras.Model):
    """The lecture's Decoder: dense 256, reshape 4x4x16, conv-transposes 8, 4 (2x2), 1 (3x3)."""

    def __init__(self, latent):
        super().__init__()
        spec = layout.CONV_DECODER
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.l1 = tf.keras.layers.Dense(spec["dense"], activation="relu")
        self.re = tf.keras.layers.Reshape(spec["reshape"])
        self.c1 = tf.keras.layers.Conv2DTranspose(f1, k1, padding="valid")
        self.c2 = tf.keras.layers.Conv2DTranspose(f2, k2, padding="valid")
        self.c3 = tf.keras.layers.Conv2DTranspose(f3, k3, padding="valid", activation="sigmoid")

    def call(self, z):
        h = self.re(self.l1(z))
        # The lecture's activation="leaky_relu" means a slope of 0.2 (Keras's); said explicitly.
        h = tf.nn.leaky_relu(self.c1(h), alpha=layout.LEAKY_SLOPE)
        h = tf.nn.leaky_relu(self.c2(h), alpha=layout.LEAKY_SLOPE)
        return float32(self.c3(h))


# --8<-- [end:model]


# --8<-- [start:objective]
def vae_figures(x, x_hat, mu, logvar, temperature, objective):
    """The figures of one batch (see layout's docstring): loss = kl + reconstruction, and the
    negative ELBO per image of the Gaussian decoder of variance T, constant included."""
    kl_terms = 0.5 * (tf.square(mu) + tf.exp(logvar) - 1.0 - logvar)
    squares = tf.square(x - x_hat)
    kl_per_image = tf.reduce_sum(kl_terms, axis=1)
    squares_per_image = tf.reduce_sum(squares, axis=[1, 2, 3])
    if objective == "elbo":
        kl = tf.reduce_mean(kl_per_image)
        reconstruction = tf.reduce_mean(squares_per_image) / (2.0 * temperature)
    else:  # the lecture's: reduce_mean over the batch and the dimensions alike
        kl = tf.reduce_mean(kl_terms)
        reconstruction = tf.reduce_mean(squares) / (2.0 * temperature)
    neg_elbo = tf.reduce_mean(kl_per_image + squares_per_image / (2.0 * temperature))
    neg_elbo += layout.gaussian_constant(temperature)
    loss = kl + reconstruction
    return {"loss": loss, "kl": kl, "reconstruction": reconstruction, "neg_elbo": neg_elbo}


# --8<-- [end:objective]


class Trainer(TensorFlowTrainer):
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        super().__init__(seed, devices)
        self.network, self.objective, self.latent = network, objective, latent
        self.temperature = float(temperature)
        self.shapes = layout.canonical_shapes(network, latent)
        with self.strategy.scope():
            self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent)
            self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent)
            self.decoder(self.encoder(tf.zeros((1, *layout.IMAGE)))[0])  # both built now
            self.variables = self.encoder.trainable_variables + self.decoder.trainable_variables
            self.optimizer = built_adam(self.variables, lr, **layout.ADAM)
        # Re-seeded every epoch; outside the scope: a global batch's noise is drawn once.
        self.noise = tf.random.Generator.from_seed(seed)

    # --8<-- [start:step]
    def forward(self, x, eps=None):
        mu, logvar = self.encoder(x)  # once per step
        eps = self.noise.normal(tf.shape(mu)) if eps is None else eps
        x_hat = self.decoder(mu + eps * tf.exp(0.5 * logvar))
        return vae_figures(x, x_hat, mu, logvar, self.temperature, self.objective)

    @tf.function(reduce_retracing=True)
    def train_step(self, x):
        eps = self.noise.normal((self.global_rows(x), self.latent))
        return self.on_replicas(self.replica_step, x, eps)

    def replica_step(self, x, eps):
        with tf.GradientTape() as tape:
            figures = self.forward(x, self.replica_rows(eps, tf.shape(x)[0]))
            scaled = self.replica_share(figures["loss"])
        grads = tape.gradient(scaled, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return figures

    @tf.function(reduce_retracing=True)
    def eval_step(self, x):
        return self.forward(x)

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        dataset = self.stateless_shuffle(x, shuffle_seed)
        self.noise.reset_from_seed(shuffle_seed)
        means = RunningMeans(layout.FIGURES)
        for x_batch in self.batches(dataset, len(x), batch_size):
            means.add_all(self.train_step(x_batch), int(self.global_rows(x_batch)))
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        self.noise.reset_from_seed(self.seed)  # the same held-out noise at every call
        return self.evaluate_figures(x, batch_size, layout.FIGURES)

    # --8<-- [end:step]

    def encode(self, x):
        return tuple(t.numpy() for t in self.encoder(tf.convert_to_tensor(x, tf.float32)))

    def decode(self, z):
        return self.decoder(tf.convert_to_tensor(z, tf.float32)).numpy()[..., 0]

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z from a tf.random.Generator seeded with seed."""
        return self.decode(scale * tf.random.Generator.from_seed(seed).normal((n, self.latent)))

    def split(self, arrays):
        n = len(self.encoder.trainable_variables)
        return {"encoder": list(arrays[:n]), "decoder": list(arrays[n:])}

    def get_weights(self):
        return layout.copied({net: getattr(self, net).get_weights() for net in layout.NETS})

    def set_weights(self, weights):
        layout.check_weights(self.shapes, weights)
        self.encoder.set_weights(weights["encoder"])
        self.decoder.set_weights(weights["decoder"])

    def objective_and_grads(self, batch, noise=None):
        """The loss and its gradients on batch (x,), the noise eps (B, latent) given."""
        x, eps = (tf.convert_to_tensor(a, tf.float32) for a in (batch[0], noise))
        loss, grads = self.loss_and_gradients(lambda: self.forward(x, eps)["loss"], self.variables)
        return loss, layout.copied(self.split(grads))

    def state(self):
        first, second, step = self.adam_moments(self.optimizer, self.variables)
        arrays = layout.pack_state(self.get_weights(), self.split(first), self.split(second), step)
        return arrays, layout.state_meta(ENGINE, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.shapes)
        self.set_weights(weights)
        first, second = (moments["encoder"] + moments["decoder"] for moments in (first, second))
        self.load_adam_moments(self.optimizer, self.variables, first, second, step)
