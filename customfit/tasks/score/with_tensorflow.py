"""Score models in TensorFlow, the lecture's way: a tf.keras.Model, a training step written by hand
with tf.GradientTape under @tf.function, tf.data batches, and a tf.random.Generator re-seeded every
epoch (a resumed run draws what an uninterrupted one drew). Read top to bottom: the network, the
objectives, the step and the epoch loop, Langevin sampling; the plumbing is tensorflow_trainer.py's.

Score matching puts the divergence of the network's output w.r.t. its input inside the loss: a tape
inside the tape. The inner one gives the Jacobian (batch_jacobian: its trace is the exact
divergence) or a vector-Jacobian product (Hutchinson's estimate); the outer one records that too.
"""

import numpy as np
import tensorflow as tf

from customfit.tasks.score import layout
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.tensorflow_trainer import ENGINE, TensorFlowTrainer, built_adam, float32
from customfit.trainers.tensorflow_trainer import tensor


# --8<-- [start:model]
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
            x = x / tf.sqrt(sigma**2 + self.sigma_data**2)
        h = x if sigma is None else tf.concat([x, tf.math.log(sigma)], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        h = float32(self.out(h))
        return h if sigma is None else h / float32(sigma)  # Keras cast sigma to the policy


# --8<-- [end:model]


# --8<-- [start:objective]
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


# --8<-- [end:objective]


class Trainer(TensorFlowTrainer):
    def __init__(
        self, method, network, lr, seed, *, sigmas=None, divergence="exact", decay_steps=None
    ):
        self.settings = layout.settings(method, network, divergence, sigmas)
        self.method, self.network, self.divergence, sigmas = self.settings
        super().__init__(seed)
        self.sigmas = None if sigmas is None else tf.constant(sigmas)
        self.data = layout.NETWORKS[network]["data"]
        self.net = ScoreNet(network)  # its weights built now, on a probe:
        self.net(tf.zeros((1, self.data)), None if self.sigmas is None else tf.ones((1, 1)))
        self.variables = self.net.trainable_variables
        rate = lr if not decay_steps else tf.keras.optimizers.schedules.CosineDecay(lr, decay_steps)
        self.optimizer = built_adam(self.variables, rate, **layout.ADAM)
        # Re-seeded at the start of every epoch, evaluation and sampling: no state to keep.
        self.noise = tf.random.Generator.from_seed(seed)

    # --8<-- [start:step]
    def draw(self, x):
        """The objective's random draws for batch x: {} (exact), a probe, or levels and noise."""
        if self.method == "dsm":
            levels = self.noise.uniform([tf.shape(x)[0]], 0, len(self.sigmas), dtype=tf.int64)
            return {"levels": levels, "z": self.noise.normal(tf.shape(x))}
        if self.divergence == "hutchinson":
            bits = self.noise.uniform(tf.shape(x), 0, 2, dtype=tf.int32)
            return {"probe": tf.cast(bits, tf.float32) * 2.0 - 1.0}
        return {}

    def figures(self, x, noise):
        if self.method == "dsm":
            sigma = tf.gather(self.sigmas, noise["levels"])[:, None]
            return denoising_score_matching(self.net, x, sigma, noise["z"])
        return score_matching(self.net, x, self.divergence, noise.get("probe"))

    @tf.function(reduce_retracing=True)
    def train_step(self, x):
        with tf.GradientTape() as tape:
            figures = self.figures(x, self.draw(x))
        grads = tape.gradient(figures["loss"], self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return figures

    @tf.function(reduce_retracing=True)
    def eval_step(self, x):
        return self.figures(x, self.draw(x))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        batches = self.batches(self.stateless_shuffle(x, shuffle_seed), len(x), batch_size)
        self.noise.reset_from_seed(shuffle_seed)
        means = RunningMeans(layout.FIGURES[self.method])
        for x_batch in batches:
            means.add_all(self.train_step(x_batch), x_batch.shape[0])
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        self.noise.reset_from_seed(self.seed)  # the same held-out draws at every call
        return self.evaluate_figures(x, batch_size, layout.FIGURES[self.method])

    # --8<-- [end:step]

    def sigma(self, level, x):
        return None if level is None else tf.fill([tf.shape(x)[0], 1], self.sigmas[level])

    def score(self, x, level=None):
        x = tensor(x)
        return self.net(x, self.sigma(level, x)).numpy()

    @tf.function(reduce_retracing=True)
    def langevin_steps(self, x, eps, sigma, count):
        """`count` Langevin steps of size eps; sigma: the noise level, or None (lecture)."""
        for _ in tf.range(count):
            s = self.net(x) if sigma is None else self.net(x, tf.fill([tf.shape(x)[0], 1], sigma))
            xi = self.noise.normal(tf.shape(x))
            x = x + eps * s + tf.sqrt(2.0 * eps * layout.TEMPERATURE) * xi
        return x

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        x, xi, eps = tensor(x), tensor(noise), tf.constant(eps, tf.float32)
        s = self.net(x, self.sigma(level, x))
        return (x + eps * s + tf.sqrt(2.0 * eps * layout.TEMPERATURE) * xi).numpy()

    def denoise(self, x):
        x, last = tensor(x), len(self.sigmas) - 1
        return (x + self.sigmas[last] ** 2 * self.net(x, self.sigma(last, x))).numpy()

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (lecture) or annealed Langevin and a denoising step (dsm) from N(0, start_std^2
        I), drawn from `seed`: the samples, and the states after the steps in `record` (from 1)."""
        self.noise.reset_from_seed(seed)
        x = start_std * self.noise.normal((n, self.data))
        frames = []
        sigmas = None if self.sigmas is None else self.sigmas.numpy()
        plan = layout.langevin_plan(self.method, steps, step_size, sigmas)
        for level, eps, count, keep in layout.segments(plan, record):
            sigma = None if level is None else self.sigmas[level]
            x = self.langevin_steps(x, tf.constant(eps, tf.float32), sigma, tf.constant(count))
            if keep:
                frames.append(x.numpy())
        samples = self.denoise(x) if self.method == "dsm" else x.numpy()
        return samples, np.asarray(frames, np.float32).reshape(len(frames), n, self.data)

    def get_weights(self):
        return layout.copied(self.net.get_weights())

    def set_weights(self, weights):
        layout.check_weights(self.network, weights)
        self.net.set_weights([np.asarray(w, np.float32) for w in weights])

    def objective_and_grads(self, batch, noise=None):
        """The loss and its gradients on batch (x,), the draws given (see layout.parity_draws)."""
        given = {k: tf.convert_to_tensor(v) for k, v in layout.parity_draws(noise).items()}
        x = tensor(batch[0])
        loss, grads = self.loss_and_gradients(
            lambda: self.figures(x, given)["loss"], self.variables
        )
        return loss, layout.copied(grads)

    def state(self):
        first, second, step = self.adam_moments(self.optimizer, self.variables)
        arrays = layout.pack_state(self.get_weights(), first, second, step)
        return arrays, layout.state_meta(ENGINE, *self.settings)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.network)
        self.set_weights(weights)
        self.load_adam_moments(self.optimizer, self.variables, first, second, step)
