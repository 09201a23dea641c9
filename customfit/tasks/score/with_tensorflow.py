"""Score models in TensorFlow, the lecture's way: a tf.keras.Model subclass, a training step written
by hand with tf.GradientTape under @tf.function, tf.data batches.

The lecture's score matching needs the divergence of the network's output with respect to its
input inside the loss: a tape inside the tape. The inner tape watches the input and gives the
Jacobian (batch_jacobian: one (D, D) matrix per sample, whose trace is the exact divergence) or a
vector-Jacobian product (the sliced, Hutchinson, estimate); the outer tape records that
computation too, so that its gradient with respect to the weights goes through the divergence.

Every random draw comes from a tf.random.Generator re-seeded at the start of each epoch from the
loop's shuffle seed (and from the run's seed when sampling): a resumed run draws what an
uninterrupted one drew.
"""

import numpy as np
import tensorflow as tf

from customfit.tasks.score import layout
from customfit.trainers.keras_adam import keras_adam_slots

ENGINE = "tensorflow"


def _require_tensorflow_backend():
    # TF 2.21's tf.keras *is* Keras 3 and follows KERAS_BACKEND: under another backend its layers
    # would hold JAX or torch tensors that GradientTape cannot see.
    backend = tf.keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "the tensorflow engine needs KERAS_BACKEND=tensorflow (tf.keras follows it), "
            f"but this process's Keras backend is {backend!r}; run it in its own process")


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return tf.cast(h, tf.float32)


class ScoreNet(tf.keras.Model):
    """s(x) (the lecture's model), or s(x, sigma) = net([x, log sigma]) / sigma (dsm; the
    digits network scales x by 1 / sqrt(sigma^2 + sigma_data^2) first)."""

    def __init__(self, network):
        super().__init__()
        _, hidden, out = layout.dims(network)
        activation = layout.NETWORKS[network]["activation"]
        self.sigma_data = layout.NETWORKS[network]["sigma_data"]
        self.hidden = [tf.keras.layers.Dense(units, activation=activation) for units in hidden]
        self.out = tf.keras.layers.Dense(out)

    def call(self, x, sigma=None):
        if sigma is not None and self.sigma_data is not None:
            x = x / tf.sqrt(sigma ** 2 + self.sigma_data ** 2)
        h = x if sigma is None else tf.concat([x, tf.math.log(sigma)], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        h = float32(self.out(h))
        return h if sigma is None else h / float32(sigma)  # Keras cast sigma to the policy


def score_matching(net, x, divergence, probe=None):
    """The lecture's loss, mean |s|^2 + 2 div s, with its two parts. Called inside the training
    step's tape: the inner tape's work is recorded by it."""
    with tf.GradientTape(watch_accessed_variables=False) as inner:
        inner.watch(x)
        s = net(x)
        if divergence == "hutchinson":
            projected = tf.reduce_sum(s * probe)
    if divergence == "exact":
        div = tf.linalg.trace(inner.batch_jacobian(s, x))  # (B, D, D) -> (B,)
    else:
        div = tf.reduce_sum(inner.gradient(projected, x) * probe, axis=1)
    squared_norm = tf.reduce_mean(tf.reduce_sum(tf.square(s), axis=1))
    div = tf.reduce_mean(div)
    return {"loss": squared_norm + 2.0 * div, "squared_norm": squared_norm, "divergence": div}


def denoising_score_matching(net, x, sigma, z):
    """mean | sigma s(x + sigma z, sigma) + z |^2; sigma (B, 1), one noise level per sample."""
    s = net(x + sigma * z, sigma)
    return {"loss": tf.reduce_mean(tf.reduce_sum(tf.square(sigma * s + z), axis=1))}


class Trainer:
    def __init__(self, method, network, lr, seed, *, sigmas=None, divergence="exact",
                 decay_steps=None):
        _require_tensorflow_backend()
        layout.check(method, network, divergence, sigmas)
        self.method, self.network, self.seed = method, network, seed
        self.divergence = divergence if method == "lecture" else None
        self.sigmas = None if sigmas is None else tf.constant(np.asarray(sigmas, np.float32))
        self.data = layout.NETWORKS[network]["data"]
        # Keras's initializers draw from the global seed: set it, and the weights follow `seed`.
        tf.keras.utils.set_random_seed(seed)
        self.net = ScoreNet(network)
        probe = tf.zeros((1, self.data))
        self.net(probe, None if self.sigmas is None else tf.ones((1, 1)))  # build the weights now
        self.variables = self.net.trainable_variables
        rate = lr if not decay_steps else tf.keras.optimizers.schedules.CosineDecay(lr, decay_steps)
        self.optimizer = tf.keras.optimizers.Adam(rate, **layout.ADAM)
        # Create the Adam moments now rather than at the first step, so load_state can fill them.
        self.optimizer.build(self.variables)
        # Re-seeded at the start of every epoch, evaluation and sampling: no state to keep.
        self.noise = tf.random.Generator.from_seed(seed)

    # ---- the objective

    def _draw(self, x):
        """The objective's random draws for batch x: {} (exact), a probe, or levels and noise."""
        if self.method == "dsm":
            n = tf.shape(x)[0]
            levels = self.noise.uniform([n], 0, len(self.sigmas), dtype=tf.int64)
            return {"levels": levels, "z": self.noise.normal(tf.shape(x))}
        if self.divergence == "hutchinson":
            bits = self.noise.uniform(tf.shape(x), 0, 2, dtype=tf.int32)
            return {"probe": tf.cast(bits, tf.float32) * 2.0 - 1.0}
        return {}

    def _figures(self, x, noise):
        if self.method == "dsm":
            sigma = tf.gather(self.sigmas, noise["levels"])[:, None]
            return denoising_score_matching(self.net, x, sigma, noise["z"])
        return score_matching(self.net, x, self.divergence, noise.get("probe"))

    # reduce_retracing: the last, shorter batch reuses the trace instead of making a new one.
    @tf.function(reduce_retracing=True)
    def _train_step(self, x):
        with tf.GradientTape() as tape:
            figures = self._figures(x, self._draw(x))
        grads = tape.gradient(figures["loss"], self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return figures

    @tf.function(reduce_retracing=True)
    def _eval_step(self, x):
        return self._figures(x, self._draw(x))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # The epoch's order from a stateless shuffle keyed by shuffle_seed alone, so that a
        # resumed run sees the same batches (Dataset.shuffle also depends on TF's global seed).
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x)), seed=[shuffle_seed, 0])
        dataset = tf.data.Dataset.from_tensor_slices(tf.gather(x, order)).batch(batch_size)
        self.noise.reset_from_seed(shuffle_seed)
        means = layout.RunningMeans(self.method)
        for x_batch in dataset:
            figures = self._train_step(x_batch)
            means.add({k: v.numpy() for k, v in figures.items()}, x_batch.shape[0])
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        self.noise.reset_from_seed(self.seed)  # the same held-out draws at every call
        means = layout.RunningMeans(self.method)
        for x_batch in tf.data.Dataset.from_tensor_slices(x).batch(batch_size):
            figures = self._eval_step(x_batch)
            means.add({k: v.numpy() for k, v in figures.items()}, x_batch.shape[0])
        return means.means()

    # ---- the score and Langevin sampling

    def _sigma(self, level, x):
        return None if level is None else tf.fill([tf.shape(x)[0], 1], self.sigmas[level])

    def score(self, x, level=None):
        x = tf.convert_to_tensor(np.asarray(x, np.float32))
        return self.net(x, self._sigma(level, x)).numpy()

    @tf.function(reduce_retracing=True)
    def _steps(self, x, eps, sigma, count):
        """`count` Langevin steps of size eps; sigma: the noise level, or None (lecture)."""
        for _ in tf.range(count):
            s = self.net(x) if sigma is None else self.net(x, tf.fill([tf.shape(x)[0], 1], sigma))
            x = x + eps * s + tf.sqrt(2.0 * eps * layout.TEMPERATURE) * self.noise.normal(tf.shape(x))
        return x

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        x = tf.convert_to_tensor(np.asarray(x, np.float32))
        eps = tf.constant(eps, tf.float32)
        xi = tf.convert_to_tensor(np.asarray(noise, np.float32))
        return (x + eps * self.net(x, self._sigma(level, x))
                + tf.sqrt(2.0 * eps * layout.TEMPERATURE) * xi).numpy()

    def _denoise(self, x):
        last = len(self.sigmas) - 1
        return x + self.sigmas[last] ** 2 * self.net(x, self._sigma(last, x))

    def denoise(self, x):
        return self._denoise(tf.convert_to_tensor(np.asarray(x, np.float32))).numpy()

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (lecture) or annealed Langevin and a last denoising step (dsm) from
        N(0, start_std^2 I), every draw from a tf.random.Generator seeded with `seed`. Returns
        the samples and the states after the steps numbered in `record` (frames, 1 = the first)."""
        self.noise.reset_from_seed(seed)
        x = start_std * self.noise.normal((n, self.data))
        frames = []
        sigmas = None if self.sigmas is None else self.sigmas.numpy()
        plan = layout.langevin_plan(self.method, steps, step_size, sigmas)
        for level, eps, count, keep in layout.segments(plan, record):
            sigma = None if level is None else self.sigmas[level]
            x = self._steps(x, tf.constant(eps, tf.float32), sigma, tf.constant(count))
            if keep:
                frames.append(x.numpy())
        if self.method == "dsm":
            x = self._denoise(x)
        return x.numpy(), np.asarray(frames, np.float32).reshape(len(frames), n, self.data)

    # ---- weights, the parity hook, state

    def get_weights(self):
        return layout.copied(self.net.get_weights())

    def set_weights(self, weights):
        layout.check_weights(self.network, weights)
        self.net.set_weights([np.asarray(w, np.float32) for w in weights])

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,), with the
        objective's draws given: None (exact divergence), {"probe"} or {"levels", "z"}."""
        (x,) = batch
        given = {} if noise is None else {k: tf.convert_to_tensor(np.asarray(v)) for k, v in noise.items()}
        if "z" in given:
            given["z"] = tf.cast(given["z"], tf.float32)
        if "probe" in given:
            given["probe"] = tf.cast(given["probe"], tf.float32)
        with tf.GradientTape() as tape:
            loss = self._figures(tf.convert_to_tensor(np.asarray(x, np.float32)), given)["loss"]
        grads = tape.gradient(loss, self.variables)
        return float(loss), layout.copied([g.numpy() for g in grads])

    def state(self):
        momentums, velocities = keras_adam_slots(self.optimizer, self.variables)
        arrays = layout.pack_state(self.get_weights(), [m.numpy() for m in momentums],
                                   [v.numpy() for v in velocities],
                                   int(self.optimizer.iterations.numpy()))
        return arrays, layout.state_meta(ENGINE, self.method, self.network, self.divergence,
                                         None if self.sigmas is None else self.sigmas.numpy())

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.network)
        self.set_weights(weights)
        momentums, velocities = keras_adam_slots(self.optimizer, self.variables)
        for variables, values in ((momentums, first), (velocities, second)):
            for variable, value in zip(variables, values):
                variable.assign(value)
        self.optimizer.iterations.assign(step)
