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
from keras import ops as K

import customfit as cf
from customfit.core.model import build_train_step
from customfit.parallel.keras_fit import own_rows
from customfit.tasks.gan import layout

# The generator and the discriminator (the docs' "model" section) are plain Keras models, shared
# with the native TensorFlow engine, which trains them with tf.GradientTape: keras_networks.py.
from customfit.tasks.gan.keras_networks import NETWORKS
from customfit.trainers.keras_trainer import (
    KerasTrainer,
    reseed,
    stateless_value_and_grads,
    tensor,
    to_numpy,
)


# --8<-- [start:objective]
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
        return K.mean(K.softplus(-self.dis(x, training=training))) + K.mean(
            K.softplus(self.dis(fake, training=training))
        )

    def gen_loss(self, z, training=True):
        with cf.frozen(self.dis):
            return K.mean(K.softplus(-self.dis(self.gen(z, training=training), training=training)))

    def latents(self, x):
        # On several devices a replica holds a share of the batch, and takes its share of the
        # global batch's latents.
        return own_rows(
            lambda n: keras.random.normal((n, self.latent), seed=self.noise), K.shape(x)[0]
        )

    def dis_objective(self, x, training=True):
        return self.dis_loss(x, self.latents(x), training)

    def gen_objective(self, x, training=True):
        return self.gen_loss(self.latents(x), training)

    def updates(self):
        # Per batch: critic_steps discriminator updates on the same real digits, each with
        # fresh latents, then one generator update. Logged as dis_loss and gen_loss.
        return [
            cf.Update("dis", self.dis_objective, self.dis, repeat=self.critic_steps),
            cf.Update("gen", self.gen_objective, self.gen),
        ]


# --8<-- [end:objective]


# --8<-- [start:step]
class Trainer(KerasTrainer):
    """The GAN compiled with one Adam per network, and fit() an epoch at a time."""

    def __init__(self, model, latent, critic_steps, lr, seed, gan_class=GAN, devices=1):
        super().__init__(seed, devices)
        self.model, self.latent = model, latent
        self.entries = layout.entries(model, latent)
        self.parity_functions = {}

        def adam():
            return keras.optimizers.Adam(
                lr,
                beta_1=layout.MODELS[model]["beta_1"],
                beta_2=layout.BETA_2,
                epsilon=layout.ADAM_EPSILON,
            )

        with self.parallel.scope():
            self.gan = gan_class(model, latent, critic_steps, seed)
            self.parallel.synchronize_batch_norm(self.gan)
            self.gan.compile(optimizer={"dis": adam(), "gen": adam()})
            build_train_step(self.gan, (np.zeros((1, *layout.IMAGE_SHAPE), "float32"),))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        reseed(self.gan.noise, layout.noise_seed(shuffle_seed))
        return self.fit_epoch(self.gan, (x,), batch_size, shuffle_seed, on_batch)

    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        reseed(self.gan.noise, layout.EVAL_SEED)
        return self.evaluate_model(self.gan, (x,), batch_size)

    def generate(self, z):
        images = self.gan.predict(np.asarray(z, np.float32), batch_size=1000, verbose=0)
        return np.asarray(images)[..., 0].copy()

    def sample(self, n, seed):
        """n digits from n latents drawn by Keras's random ops seeded with `seed`."""
        return self.generate(to_numpy(keras.random.normal((n, self.latent), seed=seed)))

    # ---- weights, the parity hook, state: every array in the canonical layout (layout.py)

    def _variables(self, net, only_trainable=False):
        return layout.keras_variables(getattr(self.gan, net), self.entries[net], only_trainable)

    def get_weights(self):
        return {net: [to_numpy(v.value) for v in self._variables(net)] for net in layout.NETWORKS}

    def set_weights(self, weights):
        layout.assign_weights(self.model, self.latent, self._variables, weights)

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (see layout.py): {"dis": (value, grads), "gen": (value, grads)} for
        the objectives `noise` names, in training mode, nothing updated."""
        (x,) = batch
        noise = layout.check_noise(noise, self.latent)
        x, values = tensor(x), [v.value for v in self._all_variables()]
        answers = {}
        for name, z in noise.items():
            if name not in self.parity_functions:  # on JAX, one jitted function per objective
                loss = self.gan.dis_loss if name == "dis" else lambda x, z: self.gan.gen_loss(z)
                self.parity_functions[name] = stateless_value_and_grads(
                    loss,
                    self._variables(name, only_trainable=True),
                    self._all_variables(),
                    jit=True,
                )
            value, grads = self.parity_functions[name](values, x, K.convert_to_tensor(z))
            answers[name] = (float(to_numpy(value)), [to_numpy(g) for g in grads])
        return answers

    def _all_variables(self):
        return list(self.gan.gen.variables) + list(self.gan.dis.variables)

    def _adam(self, net):
        """A network's Adam, the variables it was built for, and its canonical trainable ones."""
        return (
            self.gan.optimizer.members[net],
            getattr(self.gan, net).trainable_variables,
            self._variables(net, only_trainable=True),
        )

    def state(self):
        moments, steps = {}, {}
        for net in layout.NETWORKS:
            *moments[net], steps[net] = self.adam_state(*self._adam(net))
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(self.engine)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        for net in layout.NETWORKS:
            optimizer, built_for, wanted = self._adam(net)
            self.load_adam_state(optimizer, built_for, *moments[net], steps[net], wanted)
        # The group counts train steps: one generator update each.
        self.gan.optimizer.iterations.assign(steps["gen"])
