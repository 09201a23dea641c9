"""The GAN as a cf.Model: its two objectives are written once, with keras.ops, and fit() trains
them on whichever Keras backend this process runs (the keras-tensorflow, keras-torch and
keras-jax engines).

This is the lecture's exercise 7 (a Keras model with its own train step for two optimizers)
without a train step: compile() takes the two optimizers by name, updates() says which objective
each one minimizes over which network, and cf.frozen says which network an objective must not
move (no gradient, no batch-norm statistics). The per-backend code the lecture writes (zero_grad,
backward, optimizer.apply under torch.no_grad) is customfit's business. Compare with_tensorflow.py,
with_torch.py and with_flax.py: the same objectives inside hand-written steps.
"""

import keras
import numpy as np
from keras import layers
from keras import ops as K

import customfit as cf
from customfit import weights as classifier_weights
from customfit.parallel.keras_fit import DataParallel, own_rows
from customfit.tasks.gan import layout


def batch_norm(settings):
    return layers.BatchNormalization(momentum=settings["bn_momentum"],
                                     epsilon=settings["bn_epsilon"])


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return K.cast(h, "float32")


class LectureGenerator(keras.Model):
    """The lecture's generator: dense 256 -> 4x4x16, batch norm, transposed convolutions
    2x2 (8), 2x2 (4), 3x3 (1, sigmoid), each hidden one followed by ReLU then batch norm."""

    def __init__(self, latent, **kwargs):
        super().__init__(**kwargs)
        s = layout.LECTURE
        self.dense = layers.Dense(4 * 4 * 16, activation="relu")
        self.reshape = layers.Reshape((4, 4, 16))
        self.norm0 = batch_norm(s)
        self.up1 = layers.Conv2DTranspose(8, 2, activation="relu")
        self.norm1 = batch_norm(s)
        self.up2 = layers.Conv2DTranspose(4, 2, activation="relu")
        self.norm2 = batch_norm(s)
        self.out = layers.Conv2DTranspose(1, 3, activation="sigmoid")
        self(keras.Input((latent,)))  # create the weights now

    def call(self, z, training=False):
        h = self.norm0(self.reshape(self.dense(z)), training=training)
        h = self.norm1(self.up1(h), training=training)
        h = self.norm2(self.up2(h), training=training)
        return float32(self.out(h))


class LectureDiscriminator(keras.Model):
    """The lecture's discriminator: 3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = layers.Conv2D(4, 3, activation="relu")
        self.conv2 = layers.Conv2D(8, 3, activation="relu")
        self.conv3 = layers.Conv2D(16, 3, activation="relu")
        self.flatten = layers.Flatten()
        self.logit = layers.Dense(1)
        self(keras.Input(layout.IMAGE_SHAPE))

    def call(self, x, training=False):
        return float32(self.logit(self.flatten(self.conv3(self.conv2(self.conv1(x))))))


class Generator(keras.Model):
    """DCGAN-like: dense -> 4x4xW, batch norm, ReLU; a 4x4 stride-2 transposed convolution to
    8x8xW/2, batch norm, ReLU; a 3x3 transposed convolution to 8x8x1, sigmoid."""

    def __init__(self, latent, **kwargs):
        super().__init__(**kwargs)
        s = layout.DEFAULT
        w = s["width"]
        self.dense = layers.Dense(4 * 4 * w)
        self.reshape = layers.Reshape((4, 4, w))
        self.norm0 = batch_norm(s)
        self.up = layers.Conv2DTranspose(w // 2, 4, strides=2, padding="same", use_bias=False)
        self.norm1 = batch_norm(s)
        self.out = layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")
        self(keras.Input((latent,)))

    def call(self, z, training=False):
        h = K.relu(self.norm0(self.reshape(self.dense(z)), training=training))
        h = K.relu(self.norm1(self.up(h), training=training))
        return float32(self.out(h))


class Discriminator(keras.Model):
    """DCGAN-like: a 3x3 convolution (W/2), leaky ReLU; a 4x4 stride-2 convolution to 4x4xW,
    batch norm, leaky ReLU; a dense logit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        s = layout.DEFAULT
        w, self.slope = s["width"], s["leaky_slope"]
        self.conv1 = layers.Conv2D(w // 2, 3, padding="same")
        self.conv2 = layers.Conv2D(w, 4, strides=2, padding="same", use_bias=False)
        self.norm = batch_norm(s)
        self.flatten = layers.Flatten()
        self.logit = layers.Dense(1)
        self(keras.Input(layout.IMAGE_SHAPE))

    def call(self, x, training=False):
        h = K.leaky_relu(self.conv1(x), self.slope)
        h = K.leaky_relu(self.norm(self.conv2(h), training=training), self.slope)
        return float32(self.logit(self.flatten(h)))


NETWORKS = {"lecture": (LectureGenerator, LectureDiscriminator),
            "default": (Generator, Discriminator)}


class GAN(cf.Model):
    """Two networks, two objectives, two optimizers: compile(optimizer={"dis": ..., "gen": ...})."""

    def __init__(self, model, latent, critic_steps, seed=0):
        super().__init__()
        Gen, Dis = NETWORKS[model]
        self.gen = Gen(latent, name="gen")
        self.dis = Dis(name="dis")
        self.latent, self.critic_steps = latent, critic_steps
        # The latents' random state; Trainer.train_epoch reseeds it every epoch.
        self.noise = keras.random.SeedGenerator(seed)

    def call(self, z, training=False):  # predict(): digits from latents
        return self.gen(z, training=training)

    def dis_loss(self, x, z, training=True):
        with cf.frozen(self.gen):  # the generator is not trained here, nor its statistics moved
            fake = self.gen(z, training=training)
        return (K.mean(K.softplus(-self.dis(x, training=training)))
                + K.mean(K.softplus(self.dis(fake, training=training))))

    def gen_loss(self, z, training=True):
        with cf.frozen(self.dis):
            return K.mean(K.softplus(-self.dis(self.gen(z, training=training), training=training)))

    def latents(self, x):
        # On several devices a replica holds a share of the batch, and takes its share of the
        # global batch's latents.
        return own_rows(lambda n: keras.random.normal((n, self.latent), seed=self.noise),
                        K.shape(x)[0])

    def dis_objective(self, x, training=True):
        return self.dis_loss(x, self.latents(x), training)

    def gen_objective(self, x, training=True):
        return self.gen_loss(self.latents(x), training)

    def updates(self):
        # Per batch: critic_steps discriminator updates on the same real digits, each with
        # fresh latents, then one generator update. Logged as dis_loss and gen_loss.
        return [cf.Update("dis", self.dis_objective, self.dis, repeat=self.critic_steps),
                cf.Update("gen", self.gen_objective, self.gen)]


class _Progress(keras.callbacks.Callback):
    def __init__(self, on_batch):
        super().__init__()
        self.on_batch = on_batch

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch({k: float(v) for k, v in (logs or {}).items()})


def _numpy(value):
    return np.array(K.convert_to_numpy(value), copy=True)


class Trainer:
    def __init__(self, model, latent, critic_steps, lr, seed, gan_class=GAN, devices=1):
        self.engine = f"keras-{keras.backend.backend()}"
        self.model, self.latent = model, latent
        self.entries = layout.entries(model, latent)
        # One device, or the backend's own data parallelism (customfit/parallel/keras_fit.py).
        self.parallel = DataParallel(devices)
        keras.utils.set_random_seed(seed)

        def adam():
            return keras.optimizers.Adam(lr, beta_1=layout.MODELS[model]["beta_1"],
                                         beta_2=layout.BETA_2, epsilon=layout.ADAM_EPSILON)

        with self.parallel.scope():
            self.gan = gan_class(model, latent, critic_steps, seed)
            self.parallel.synchronize_batch_norm(self.gan)
            self.gan.compile(optimizer={"dis": adam(), "gen": adam()})
            # Build the step (trackers, optimizer slots) now, so that load_state can fill them.
            self.gan._symbolic_build(data_batch=(np.zeros((1, *layout.IMAGE_SHAPE), "float32"),))

    def _reseed(self, seed):
        self.gan.noise.state.assign(np.array([seed, 0], dtype="uint32"))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # fit() would shuffle from Keras's global random state; a permutation from shuffle_seed
        # and latents reseeded from it make the epoch a function of the seed alone.
        order = self.parallel.epoch_order(np.random.default_rng(shuffle_seed).permutation(len(x)),
                                            batch_size)
        self._reseed(layout.noise_seed(shuffle_seed))
        with self.parallel.scope():
            history = self.gan.fit(x[order], batch_size=self.parallel.batch_size(batch_size),
                                   epochs=1, shuffle=False, verbose=0,
                                   callbacks=[_Progress(on_batch)])
        return self.parallel.means_over_devices(
            {k: float(v[-1]) for k, v in history.history.items()})

    def evaluate(self, x, batch_size):
        self._reseed(layout.EVAL_SEED)
        result = self.gan.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}

    def generate(self, z):
        images = self.gan.predict(np.asarray(z, np.float32), batch_size=1000, verbose=0)
        return np.asarray(images)[..., 0].copy()

    def sample(self, n, seed):
        """n digits from n latents drawn by Keras's random ops seeded with `seed`."""
        return self.generate(_numpy(keras.random.normal((n, self.latent), seed=seed)))

    # ---- weights, the parity hook, state: every array in the canonical layout (layout.py)

    def _variables(self, net, only_trainable=False):
        chosen = layout.trainable(self.entries[net]) if only_trainable else self.entries[net]
        return [layout.find(getattr(self.gan, net), e, "keras") for e in chosen]

    def get_weights(self):
        return {net: [_numpy(v.value) for v in self._variables(net)] for net in layout.NETWORKS}

    def set_weights(self, weights):
        layout.check_weights(self.model, self.latent, weights)
        for net in layout.NETWORKS:
            for variable, value in zip(self._variables(net), weights[net]):
                variable.assign(np.asarray(value, np.float32))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (see layout.py): {"dis": (value, grads), "gen": (value, grads)} for
        the objectives `noise` names, in training mode, nothing updated."""
        (x,) = batch
        noise = layout.check_noise(noise, self.latent)
        x = K.convert_to_tensor(np.asarray(x, np.float32))
        variables = self._all_variables()
        answers = {}
        for name, z in noise.items():
            value, grads = self._parity_function(name)([v.value for v in variables], x,
                                                       K.convert_to_tensor(z))
            answers[name] = (float(_numpy(value)), [_numpy(g) for g in grads])
        return answers

    def _all_variables(self):
        return list(self.gan.gen.variables) + list(self.gan.dis.variables)

    def _parity_function(self, name):
        """values, x, z -> (objective, gradients over its network's trainable entries), every
        variable read from `values` through a StatelessScope: nothing is written to a variable
        (the batch-norm statistics an update would move stay as they are), and on JAX the
        function is jitted with the weights as arguments rather than baked-in constants."""
        cache = self.__dict__.setdefault("_parity_functions", {})
        if name not in cache:
            variables = self._all_variables()
            params = self._variables(name, only_trainable=True)
            where = {id(v): i for i, v in enumerate(variables)}
            learned = {id(p) for p in params}

            def value_and_grads(values, x, z):
                others = [(v, a) for v, a in zip(variables, values) if id(v) not in learned]

                def loss_of(*own):
                    with keras.StatelessScope(state_mapping=others + list(zip(params, own))):
                        if name == "dis":
                            return self.gan.dis_loss(x, z, training=True)
                        return self.gan.gen_loss(z, training=True)

                return cf.ops.value_and_grad(loss_of, argnums=tuple(range(len(params))))(
                    *[values[where[id(p)]] for p in params])

            if keras.backend.backend() == "jax":
                import jax

                value_and_grads = jax.jit(value_and_grads)
            cache[name] = value_and_grads
        return cache[name]

    def _optimizer(self, net):
        return self.gan.optimizer.members[net]

    def _slots(self, net):
        """Each trainable entry's (momentum, velocity) variables, in canonical order."""
        network = getattr(self.gan, net)
        built_for = list(network.trainable_variables)  # the order the optimizer was built in
        momentums, velocities = classifier_weights.keras_adam_slots(self._optimizer(net), built_for)
        where = {id(v): i for i, v in enumerate(built_for)}
        order = [where[id(v)] for v in self._variables(net, only_trainable=True)]
        return [momentums[i] for i in order], [velocities[i] for i in order]

    def state(self):
        moments, steps = {}, {}
        for net in layout.NETWORKS:
            momentums, velocities = self._slots(net)
            moments[net] = ([_numpy(v.value) for v in momentums],
                            [_numpy(v.value) for v in velocities])
            steps[net] = int(_numpy(self._optimizer(net).iterations.value))
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(self.engine)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        for net in layout.NETWORKS:
            momentums, velocities = self._slots(net)
            for variable, value in zip(momentums + velocities, moments[net][0] + moments[net][1]):
                variable.assign(value)
            self._optimizer(net).iterations.assign(steps[net])
        # The group counts train steps: one generator update each.
        self.gan.optimizer.iterations.assign(steps["gen"])
