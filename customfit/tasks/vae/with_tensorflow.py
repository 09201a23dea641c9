"""The VAE in TensorFlow, the lecture's way: tf.keras.Model subclasses for the encoder and the
decoder, a training step written by hand with tf.GradientTape under @tf.function, tf.data batches.

Two fixes to the lecture's exercise 5: the encoder runs once per step (its kl_loss and
reconstruction_loss each ran it again), and the reparameterisation noise comes from a
tf.random.Generator re-seeded at the start of each epoch, so that a resumed run draws the same
noise as an uninterrupted one.
"""

import tensorflow as tf

from customfit.engines.native_checks import require_tensorflow_backend
from customfit.tasks.vae import layout
from customfit.trainers.keras_adam import keras_adam_slots

ENGINE = "tensorflow"


Dense = tf.keras.layers.Dense


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return tf.cast(h, tf.float32)


class MLPEncoder(tf.keras.Model):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.flatten = tf.keras.layers.Flatten()
        self.hidden1 = Dense(h1, activation="relu")
        self.hidden2 = Dense(h2, activation="relu")
        self.mu = Dense(latent)
        self.logvar = Dense(latent)

    def call(self, x):
        h = self.hidden2(self.hidden1(self.flatten(x)))
        return float32(self.mu(h)), float32(self.logvar(h))


class MLPDecoder(tf.keras.Model):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = Dense(h2, activation="relu")
        self.hidden2 = Dense(h1, activation="relu")
        self.out = Dense(layout.PIXELS, activation="sigmoid")
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
        self.mu = Dense(latent)
        self.logvar = Dense(latent)

    def call(self, x):
        h = self.flatten(self.c3(self.c2(self.c1(x))))
        return float32(self.mu(h)), float32(self.logvar(h))  # the lecture returned (mu, ll): a NameError


class ConvDecoder(tf.keras.Model):
    """The lecture's Decoder: dense 256, reshape 4x4x16, conv-transposes 8, 4 (2x2), 1 (3x3)."""

    def __init__(self, latent):
        super().__init__()
        spec = layout.CONV_DECODER
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.l1 = Dense(spec["dense"], activation="relu")
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
    neg_elbo = (tf.reduce_mean(kl_per_image + squares_per_image / (2.0 * temperature))
                + layout.gaussian_constant(temperature))
    return {"loss": kl + reconstruction, "kl": kl, "reconstruction": reconstruction,
            "neg_elbo": neg_elbo}


class Trainer:
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        require_tensorflow_backend()
        layout.check(network, objective)
        self.network, self.objective, self.latent = network, objective, latent
        self.temperature, self.seed = float(temperature), seed
        self._shapes = layout.canonical_shapes(network, latent)
        # One device, or N replicas of a MirroredStrategy: the networks and optimizer are made
        # in its scope (mirrored variables), each batch is split over the replicas.
        self.devices = devices
        self.strategy = tf.distribute.get_strategy() if devices == 1 else _mirrored(devices)
        # Keras's initializers draw from the global seed: set it, and the weights follow `seed`.
        tf.keras.utils.set_random_seed(seed)
        with self.strategy.scope():
            self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent)
            self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent)
            self.encoder(tf.zeros((1, *layout.IMAGE)))  # build the weights now
            self.decoder(tf.zeros((1, latent)))
            self.variables = self.encoder.trainable_variables + self.decoder.trainable_variables
            self.optimizer = tf.keras.optimizers.Adam(lr, **layout.ADAM)
            # The Adam moments now rather than at the first step, so load_state can fill them.
            self.optimizer.build(self.variables)
        # Re-seeded at the start of every epoch (and of every evaluation): no state to keep.
        # Outside the strategy's scope: on several replicas a global batch's noise is drawn
        # once, as one device draws it, and each replica takes its rows (_distributed_step).
        self.noise = tf.random.Generator.from_seed(seed)

    def _forward(self, x, eps=None):
        mu, logvar = self.encoder(x)  # once per step
        if eps is None:
            eps = self.noise.normal(tf.shape(mu))
        x_hat = self.decoder(mu + eps * tf.exp(0.5 * logvar))
        return vae_figures(x, x_hat, mu, logvar, self.temperature, self.objective)

    # reduce_retracing: the last, shorter batch reuses the trace instead of making a new one.
    @tf.function(reduce_retracing=True)
    def _train_step(self, x):
        with tf.GradientTape() as tape:
            figures = self._forward(x)
        grads = tape.gradient(figures["loss"], self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return figures

    def _global_rows(self, batch):
        """The global batch's rows: the replicas hold equal shares, and across hosts
        (MultiWorkerMirroredStrategy) only this worker's are local."""
        return tf.shape(self.strategy.experimental_local_results(batch)[0])[0] * \
            self.strategy.num_replicas_in_sync

    # The same step on N replicas: the noise drawn for the global batch first, each replica's
    # loss (a mean over its share) divided by the number of replicas, whose gradients the
    # optimizer sums (as tf.nn.compute_average_loss scales per-example losses).
    @tf.function(reduce_retracing=True)
    def _distributed_step(self, x):
        n = self._global_rows(x)
        eps = self.noise.normal((n, self.latent))

        def replica_step(x, eps):
            context = tf.distribute.get_replica_context()
            local = tf.shape(x)[0]
            own = eps[context.replica_id_in_sync_group * local:][:local]
            with tf.GradientTape() as tape:
                figures = self._forward(x, own)
                scaled = figures["loss"] / context.num_replicas_in_sync
            grads = tape.gradient(scaled, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables))
            return figures

        figures = self.strategy.run(replica_step, args=(x, eps))
        mean = tf.distribute.ReduceOp.MEAN  # equal shares: the mean of the replicas' means
        return {k: self.strategy.reduce(mean, v, None) for k, v in figures.items()}

    @tf.function(reduce_retracing=True)
    def _eval_step(self, x):
        return self._forward(x)

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # The epoch's order from a stateless shuffle keyed by shuffle_seed alone, so that a
        # resumed run sees the same batches. (Dataset.shuffle(seed=...) also depends on TF's
        # global seed, and pinning that with tf.random.set_seed costs about a second per epoch:
        # it drops TF's cached functions.)
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x)), seed=[shuffle_seed, 0])
        if self.devices > 1:  # every global batch splits evenly over the replicas
            order = order[:len(x) - len(x) % self.devices]
        dataset = tf.data.Dataset.from_tensor_slices(tf.gather(x, order)).batch(batch_size)
        self.noise.reset_from_seed(shuffle_seed)
        if self.devices == 1:
            batches, step = dataset, self._train_step
        else:
            batches = self.strategy.experimental_distribute_dataset(dataset)
            step = self._distributed_step
        means = layout.RunningMeans()
        for x_batch in batches:
            figures = step(x_batch)
            n = int(self._global_rows(x_batch))
            means.add({k: v.numpy() for k, v in figures.items()}, n)
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        self.noise.reset_from_seed(self.seed)  # the same held-out noise at every call
        means = layout.RunningMeans()
        for x_batch in tf.data.Dataset.from_tensor_slices(x).batch(batch_size):
            figures = self._eval_step(x_batch)
            means.add({k: v.numpy() for k, v in figures.items()}, x_batch.shape[0])
        return means.means()

    # ---- what the spec asks after training

    def encode(self, x):
        mu, logvar = self.encoder(tf.convert_to_tensor(x, tf.float32))
        return mu.numpy(), logvar.numpy()

    def decode(self, z):
        return self.decoder(tf.convert_to_tensor(z, tf.float32)).numpy()[..., 0]

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z from a tf.random.Generator seeded with seed."""
        z = tf.random.Generator.from_seed(seed).normal((n, self.latent))
        return self.decode(scale * z)

    # ---- weights, the parity hook, state

    def _split(self, arrays):
        n = len(self.encoder.trainable_variables)
        return {"encoder": list(arrays[:n]), "decoder": list(arrays[n:])}

    def get_weights(self):
        return layout.copied({"encoder": self.encoder.get_weights(),
                              "decoder": self.decoder.get_weights()})

    def set_weights(self, weights):
        layout.check_weights(self._shapes, weights)
        self.encoder.set_weights(weights["encoder"])
        self.decoder.set_weights(weights["decoder"])

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,) with the
        reparameterisation noise `noise` (B, latent) given; no update."""
        (x,) = batch
        with tf.GradientTape() as tape:
            loss = self._forward(tf.convert_to_tensor(x, tf.float32),
                                 eps=tf.convert_to_tensor(noise, tf.float32))["loss"]
        grads = tape.gradient(loss, self.variables)
        return float(loss), layout.copied(self._split([g.numpy() for g in grads]))

    def _moments(self):
        return keras_adam_slots(self.optimizer, self.variables)

    def state(self):
        momentums, velocities = self._moments()
        arrays = layout.pack_state(
            self.get_weights(), self._split([m.numpy() for m in momentums]),
            self._split([v.numpy() for v in velocities]), int(self.optimizer.iterations.numpy()))
        return arrays, layout.state_meta(ENGINE, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self._shapes)
        self.set_weights(weights)
        momentums, velocities = self._moments()
        for variables, values in ((momentums, first), (velocities, second)):
            for variable, value in zip(variables, values["encoder"] + values["decoder"]):
                variable.assign(value)
        self.optimizer.iterations.assign(step)


def _mirrored(devices):
    from customfit.parallel import mirrored

    return mirrored.strategy(devices)
