"""Score models as a cf.Model: the objective is written once, with keras.ops, and compile()/fit()
train it on whichever Keras backend this process runs (the keras-tensorflow, keras-torch and
keras-jax engines).

The lecture's score matching differentiates the network with respect to its input inside the
loss; Keras has no backend-agnostic way to say that, so the lecture wrote it in Flax alone.
Here the divergence is one call, cf.ops.divergence(self.net, x), exact (D input gradients) or
"hutchinson" (one vector-Jacobian product with a Rademacher probe from a SeedGenerator), and
fit() differentiates through it on all three backends. Compare with_tensorflow.py (nested tapes),
with_torch.py (torch.func) and with_flax.py (jax.jacfwd): the same objective, written three times.

The SeedGenerator's state is set from the loop's seed at the start of each epoch (and of each
evaluation): an epoch's draws are then a function of the run's seed and the epoch alone, so a
resumed run draws what an uninterrupted one drew.
"""

import keras
import numpy as np
from keras import layers
from keras import ops as K

import customfit as cf
from customfit.tasks.score import layout


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return K.cast(h, "float32")


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
            x = x / K.sqrt(sigma ** 2 + self.sigma_data ** 2)
        h = x if sigma is None else K.concatenate([x, K.log(sigma)], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        h = float32(self.out(h))
        return h if sigma is None else h / float32(sigma)  # Keras cast sigma to the policy


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


class _Progress(keras.callbacks.Callback):
    def __init__(self, on_batch, names):
        super().__init__()
        self.on_batch, self.names = on_batch, names

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch(_in_order(logs, self.names))


def _in_order(figures, names):
    # Keras hands the objective's dict back sorted by name; show it in the native engines' order.
    return {k: float(figures[k]) for k in names}


def _numpy(x):
    return np.asarray(K.convert_to_numpy(x))


class Trainer:
    def __init__(self, method, network, lr, seed, *, sigmas=None, divergence="exact",
                 decay_steps=None):
        layout.check(method, network, divergence, sigmas)
        self.engine = f"keras-{keras.backend.backend()}"
        self.method, self.network, self.seed = method, network, seed
        self.divergence = divergence if method == "lecture" else None
        self.data = layout.NETWORKS[network]["data"]
        self.names = layout.FIGURES[method]
        keras.utils.set_random_seed(seed)
        self.model = ScoreModel(method, network, self.divergence, sigmas, seed)
        self.sigmas = self.model.sigmas
        self.model.net(K.zeros((1, self.data)), None if sigmas is None else K.ones((1, 1)))
        rate = lr if not decay_steps else keras.optimizers.schedules.CosineDecay(lr, decay_steps)
        self.model.compile(optimizer=keras.optimizers.Adam(rate, **layout.ADAM))
        # Build the step (trackers, optimizer slots) now, so that load_state has them to fill.
        self.model._symbolic_build(data_batch=(np.zeros((1, self.data), "float32"),))
        self._variables = self.model.net.trainable_variables
        if [id(v) for v in self._variables] != [id(v) for v in self.model.trainable_variables]:
            raise RuntimeError("the score model's trainable variables are not its network's")

    def _reseed(self, seed):
        state = self.model.noise.state
        state.assign(np.asarray([seed, 0], dtype=state.dtype))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # fit() shuffles from Keras's global random state; the permutation from shuffle_seed
        # makes an epoch's batches a function of the seed alone, so a resumed run repeats them.
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        self._reseed(shuffle_seed)
        history = self.model.fit(x[order], batch_size=batch_size, epochs=1, shuffle=False,
                                 verbose=0, callbacks=[_Progress(on_batch, self.names)])
        return _in_order({k: v[-1] for k, v in history.history.items()}, self.names)

    def evaluate(self, x, batch_size):
        self._reseed(self.seed)  # the same held-out draws at every call
        figures = self.model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
        return _in_order(figures, self.names)

    # ---- the score and Langevin sampling

    def _sigma(self, level, n):
        return None if level is None else K.full((n, 1), float(self.sigmas[level]))

    def _score(self, x, level):
        # stop_gradient: outside fit() nothing differentiates the score, and on the torch backend
        # a Langevin chain would otherwise keep every step's autograd graph alive (gigabytes).
        return K.stop_gradient(self.model.net(x, self._sigma(level, K.shape(x)[0])))

    def score(self, x, level=None):
        return _numpy(self._score(K.convert_to_tensor(np.asarray(x, "float32")), level))

    def _step(self, x, eps, level, xi):
        return x + eps * self._score(x, level) + float(np.sqrt(2.0 * eps * layout.TEMPERATURE)) * xi

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        x, xi = (K.convert_to_tensor(np.asarray(a, "float32")) for a in (x, noise))
        return _numpy(self._step(x, np.float32(eps), level, xi))

    def _denoise(self, x):
        last = len(self.sigmas) - 1
        return x + float(self.sigmas[last]) ** 2 * self._score(x, last)

    def denoise(self, x):
        return _numpy(self._denoise(K.convert_to_tensor(np.asarray(x, "float32"))))

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
                x = self._step(x, np.float32(eps), level,
                               keras.random.normal((n, self.data), seed=generator))
            if keep:
                frames.append(_numpy(x))
        if self.method == "dsm":
            x = self._denoise(x)
        return _numpy(x), np.asarray(frames, np.float32).reshape(len(frames), n, self.data)

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
        x = K.convert_to_tensor(np.asarray(x, "float32"))
        given = None if noise is None else {
            k: K.convert_to_tensor(np.asarray(v, "int32" if k == "levels" else "float32"))
            for k, v in noise.items()}
        variables = self._variables

        def loss_of(*values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self.model.figures(x, given)["loss"]

        argnums = tuple(range(len(variables)))
        loss, grads = cf.ops.value_and_grad(loss_of, argnums=argnums)(*[v.value for v in variables])
        return float(_numpy(loss)), layout.copied([_numpy(g) for g in grads])

    def state(self):
        momentums, velocities = layout.keras_adam_slots(self.model.optimizer, self._variables)
        arrays = layout.pack_state(self.get_weights(), [_numpy(m.value) for m in momentums],
                                   [_numpy(v.value) for v in velocities],
                                   int(_numpy(self.model.optimizer.iterations.value)))
        return arrays, layout.state_meta(self.engine, self.method, self.network, self.divergence,
                                         self.sigmas)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.network)
        self.set_weights(weights)
        momentums, velocities = layout.keras_adam_slots(self.model.optimizer, self._variables)
        for variables, values in ((momentums, first), (velocities, second)):
            for variable, value in zip(variables, values):
                variable.assign(value)
        self.model.optimizer.iterations.assign(step)
