"""Score models as a cf.Model: the objective is written once, with keras.ops, and compile()/fit()
train it on whichever Keras backend this process runs (the keras-tensorflow, keras-torch and
keras-jax engines).

The lecture's score matching differentiates the network with respect to its input inside the
loss; Keras has no backend-agnostic way to say that, so the lecture wrote it in Flax alone.
Here the divergence is one call, cf.ops.divergence(self.net, x), exact (D input gradients) or
"hutchinson" (one vector-Jacobian product with a Rademacher probe from a SeedGenerator), and
fit() differentiates through it on all three backends. Compare with_tensorflow.py (nested tapes),
with_torch.py (torch.func) and with_flax.py (jax.jacfwd): the same objective, written three times.
The plumbing around it (seeds, checkpoints, the parity hook) is
customfit/trainers/keras_trainer.py's.
"""

import keras
import numpy as np
from keras import layers
from keras import ops as K

import customfit as cf
from customfit.core.model import build_train_step
from customfit.tasks.score import layout
from customfit.trainers.keras_trainer import KerasTrainer, float32, tensor, to_numpy


# --8<-- [start:model]
class ScoreNet(keras.Model):
    """s(x) (the lecture's model), or s(x, sigma) = net([x, log sigma]) / sigma (dsm; the
    digits network scales x by 1 / sqrt(sigma^2 + sigma_data^2) first)."""

    def __init__(self, network):
        super().__init__(name="score_net")
        _, hidden, out = layout.dims(network)
        activation = layout.NETWORKS[network]["activation"]
        self.sigma_data = layout.NETWORKS[network]["sigma_data"]
        self.hidden = [layers.Dense(units, activation=activation) for units in hidden]
        self.out = layers.Dense(out)

    def call(self, x, sigma=None):
        if sigma is not None and self.sigma_data is not None:
            x = x / K.sqrt(sigma**2 + self.sigma_data**2)
        h = x if sigma is None else K.concatenate([x, K.log(sigma)], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        h = float32(self.out(h))
        return h if sigma is None else h / float32(sigma)  # Keras cast sigma to the policy


# --8<-- [end:model]


# --8<-- [start:objective]
class ScoreModel(cf.Model):
    def __init__(self, method, network, divergence, sigmas, seed):
        super().__init__()
        self.net = ScoreNet(network)
        self.noise = keras.random.SeedGenerator(seed)
        self.method, self.divergence = method, divergence
        self.sigmas = None if sigmas is None else np.asarray(sigmas, np.float32)

    def call(self, x, sigma=None):
        return self.net(x, sigma)

    def objective(self, x, training=True):
        return self.figures(x)

    def figures(self, x, given=None):
        """The loss and its parts; `given`: the draws, from outside (the parity hook), else
        drawn here from the SeedGenerator."""
        if self.method == "dsm":
            if given is None:
                levels = keras.random.randint(K.shape(x)[:1], 0, len(self.sigmas), seed=self.noise)
                z = keras.random.normal(K.shape(x), seed=self.noise)
            else:
                levels, z = given["levels"], given["z"]
            sigma = K.expand_dims(K.take(K.convert_to_tensor(self.sigmas), levels), 1)
            s = self.net(x + sigma * z, sigma)
            return {"loss": K.mean(K.sum(K.square(sigma * s + z), axis=1))}
        # The lecture's: mean |s|^2 + 2 div s.
        s = self.net(x)
        if given is not None and "probe" in given:
            # The sliced estimate with a probe from outside: what cf.ops.divergence computes
            # with its own probe (tests hold the two equal).
            probe = given["probe"]
            vjp = cf.ops.grad(lambda x_: K.sum(self.net(x_) * probe))(x)
            div = K.sum(vjp * probe, axis=1)
        else:
            div = cf.ops.divergence(self.net, x, method=self.divergence, seed=self.noise)
        squared_norm = K.mean(K.sum(K.square(s), axis=1))
        div = K.mean(div)
        return {"loss": squared_norm + 2.0 * div, "squared_norm": squared_norm, "divergence": div}


# --8<-- [end:objective]


# --8<-- [start:step]
class Trainer(KerasTrainer):
    """The score model compiled with Adam (its rate cosine-decayed over decay_steps);
    KerasTrainer.train_epoch fits it an epoch at a time, its draws reseeded from the epoch's
    seed."""

    def __init__(
        self, method, network, lr, seed, *, sigmas=None, divergence="exact", decay_steps=None
    ):
        self.settings = layout.settings(method, network, divergence, sigmas)
        self.method, self.network, self.divergence, self.sigmas = self.settings
        super().__init__(seed)
        self.data = layout.NETWORKS[network]["data"]
        self.figure_names = layout.FIGURES[method]
        self.model = ScoreModel(method, network, self.divergence, sigmas, seed)
        self.model.net(K.zeros((1, self.data)), None if sigmas is None else K.ones((1, 1)))
        rate = lr if not decay_steps else keras.optimizers.schedules.CosineDecay(lr, decay_steps)
        self.model.compile(optimizer=keras.optimizers.Adam(rate, **layout.ADAM))
        build_train_step(self.model, (np.zeros((1, self.data), "float32"),))
        self._variables = self.trainable_of(self.model, self.model.net)

    # --8<-- [end:step]

    # ---- the score and Langevin sampling

    def _sigma(self, level, n):
        return None if level is None else K.full((n, 1), float(self.sigmas[level]))

    def _score(self, x, level):
        # stop_gradient: outside fit() nothing differentiates the score, and on the torch backend
        # a Langevin chain would otherwise keep every step's autograd graph alive (gigabytes).
        return K.stop_gradient(self.model.net(x, self._sigma(level, K.shape(x)[0])))

    def score(self, x, level=None):
        return to_numpy(self._score(tensor(x), level))

    def _step(self, x, eps, level, xi):
        return x + eps * self._score(x, level) + float(np.sqrt(2.0 * eps * layout.TEMPERATURE)) * xi

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        x, xi = (tensor(a) for a in (x, noise))
        return to_numpy(self._step(x, np.float32(eps), level, xi))

    def _denoise(self, x):
        last = len(self.sigmas) - 1
        return x + float(self.sigmas[last]) ** 2 * self._score(x, last)

    def denoise(self, x):
        return to_numpy(self._denoise(tensor(x)))

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (lecture) or annealed Langevin and a last denoising step (dsm) from
        N(0, start_std^2 I), every draw from a keras.random.SeedGenerator(seed). Returns the
        samples and the states after the steps numbered in `record` (frames, 1 = the first)."""
        generator = keras.random.SeedGenerator(seed)
        x = start_std * keras.random.normal((n, self.data), seed=generator)
        frames = []
        plan = layout.langevin_plan(self.method, steps, step_size, self.sigmas)
        for level, eps, count, keep in layout.segments(plan, record):
            for _ in range(count):
                x = self._step(
                    x, np.float32(eps), level, keras.random.normal((n, self.data), seed=generator)
                )
            if keep:
                frames.append(to_numpy(x))
        if self.method == "dsm":
            x = self._denoise(x)
        return to_numpy(x), np.asarray(frames, np.float32).reshape(len(frames), n, self.data)

    # ---- weights, the parity hook, state

    def get_weights(self):
        return layout.copied(self.model.net.get_weights())

    def set_weights(self, weights):
        layout.check_weights(self.network, weights)
        self.model.net.set_weights([np.asarray(w, np.float32) for w in weights])

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,), with the
        objective's draws given: None (exact divergence), {"probe"} or {"levels", "z"}."""
        (x,) = batch
        given = (
            None
            if noise is None
            else {k: tensor(v, "int32" if k == "levels" else "float32") for k, v in noise.items()}
        )
        loss, grads = self.value_and_grads(
            lambda x: self.model.figures(x, given)["loss"], self._variables, tensor(x)
        )
        return loss, layout.copied(grads)

    def state(self):
        first, second, step = self.adam_state(self.model.optimizer, self._variables)
        arrays = layout.pack_state(self.get_weights(), first, second, step)
        return arrays, layout.state_meta(self.engine, *self.settings)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.network)
        self.set_weights(weights)
        self.load_adam_state(self.model.optimizer, self._variables, first, second, step)
