"""The GAN in TensorFlow: tf.keras networks, two Adam optimizers, tf.GradientTape steps under
@tf.function, tf.data batches and a tf.random.Generator for the latents.

This is the lecture's TensorFlow workflow (and TensorFlow's DCGAN tutorial's): Keras only builds
the two networks (keras_networks.py, shared with the Keras engines); each update is a tape around
its objective and apply_gradients for its own network's variables. The network that is not being
trained runs in training mode, but its batch-norm moving statistics are saved and assigned back
(`frozen_statistics`): in this family an update moves its own network only (layout.py).

Read top to bottom: the objectives, the Trainer's networks, the step and the epoch loop. The
plumbing (the seed, several devices, checkpoint arrays, the parity hook's gradients) is
customfit/trainers/tensorflow_trainer.py's.
"""

import contextlib
import functools

import numpy as np
import tensorflow as tf

from customfit.tasks.gan import layout
from customfit.tasks.gan.keras_networks import NETWORKS
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.tensorflow_trainer import ENGINE, TensorFlowTrainer, built_adam, tensor
from customfit.trainers.tensorflow_trainer import numpy_copies, synchronize_batch_norm

FIGURES = ("dis_loss", "gen_loss")


@contextlib.contextmanager
def frozen_statistics(network):
    """Run `network` in training mode (batch statistics) without moving its moving statistics:
    they are read on the way in and assigned back on the way out."""
    saved = [tf.identity(v) for v in network.non_trainable_variables]
    try:
        yield network
    finally:
        for variable, value in zip(network.non_trainable_variables, saved):
            variable.assign(value)


# --8<-- [start:objective]
def dis_loss(gen, dis, real, z, training=True):
    """mean softplus(-D(x)) + mean softplus(D(G(z))): the discriminator learns to tell the real
    digits (logit up) from the generator's (logit down)."""
    with frozen_statistics(gen):
        fake = tf.stop_gradient(gen(z, training=training))  # the generator is not trained here
    return tf.reduce_mean(tf.math.softplus(-dis(real, training=training))) + tf.reduce_mean(
        tf.math.softplus(dis(fake, training=training))
    )


def gen_loss(gen, dis, z, training=True):
    """mean softplus(-D(G(z))): the non-saturating generator loss."""
    with frozen_statistics(dis):
        return tf.reduce_mean(tf.math.softplus(-dis(gen(z, training=training), training=training)))


# --8<-- [end:objective]


class Trainer(TensorFlowTrainer):
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        super().__init__(seed, devices)
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        self.entries = layout.entries(model, latent)
        # --8<-- [start:model]
        Gen, Dis = NETWORKS[model]
        with self.strategy.scope():
            self.gen, self.dis = Gen(latent, name="gen"), Dis(name="dis")
            adam = functools.partial(built_adam, learning_rate=lr, **layout.adam_settings(model))
            self.opt_gen = adam(self.gen.trainable_variables)
            self.opt_dis = adam(self.dis.trainable_variables)
        # --8<-- [end:model]
        if devices > 1:
            synchronize_batch_norm(self.gen, self.dis)
        # Outside the strategy's scope: the latents of a global batch are drawn once, in the
        # order one device draws them, and each replica takes its share (train_step).
        self.noise = tf.random.Generator.from_seed(0)  # reseeded every epoch

    # --8<-- [start:step]
    def latents(self, n):
        return self.noise.normal((n, self.latent))

    # reduce_retracing: the last, shorter batch reuses the trace instead of making a new one.
    @tf.function(reduce_retracing=True)
    def train_step(self, real):
        """critic_steps discriminator updates, then one generator update, on every replica."""
        n = self.global_rows(real)
        draws = tf.stack([self.latents(n) for _ in range(self.critic_steps + 1)])
        return self.on_replicas(self.replica_step, real, draws)

    def replica_step(self, real, draws):
        z = self.replica_rows(draws, tf.shape(real)[0], axis=1)
        dis_losses = []
        for i in range(self.critic_steps):  # a Python loop: unrolled in the traced step
            with tf.GradientTape() as tape:
                loss_d = dis_loss(self.gen, self.dis, real, z[i])
                scaled = self.replica_share(loss_d)
            grads = tape.gradient(scaled, self.dis.trainable_variables)
            self.opt_dis.apply_gradients(zip(grads, self.dis.trainable_variables))
            dis_losses.append(loss_d)
        with tf.GradientTape() as tape:
            loss_g = gen_loss(self.gen, self.dis, z[-1])
            scaled = self.replica_share(loss_g)
        grads = tape.gradient(scaled, self.gen.trainable_variables)
        self.opt_gen.apply_gradients(zip(grads, self.gen.trainable_variables))
        return tf.stack(dis_losses), loss_g

    @tf.function(reduce_retracing=True)
    def eval_step(self, real):
        n = tf.shape(real)[0]
        return {
            "dis_loss": dis_loss(self.gen, self.dis, real, self.latents(n), training=False),
            "gen_loss": gen_loss(self.gen, self.dis, self.latents(n), training=False),
        }

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        dataset = self.seeded_shuffle(np.asarray(x, np.float32), shuffle_seed)
        self.noise.reset_from_seed(layout.noise_seed(shuffle_seed))
        means = RunningMeans(FIGURES)
        for real in self.batches(dataset, len(x), batch_size):
            n = int(self.global_rows(real))
            dis_losses, loss_g = self.train_step(real)
            for loss_d in dis_losses.numpy():  # one figure per discriminator update
                means.add("dis_loss", loss_d, n)
            means.add("gen_loss", loss_g, n)
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        self.noise.reset_from_seed(layout.EVAL_SEED)
        return self.evaluate_figures(np.asarray(x, np.float32), batch_size, FIGURES)

    # --8<-- [end:step]

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        images = self.gen(tensor(z), training=False)
        return images.numpy()[..., 0].copy()

    def sample(self, n, seed):
        """n digits from n latents drawn by a tf.random.Generator seeded with `seed`."""
        return self.generate(tf.random.Generator.from_seed(seed).normal((n, self.latent)).numpy())

    # ---- weights, the parity hook, state: every array in the canonical layout (layout.py)

    def variables(self, net, only_trainable=False):
        network = {"gen": self.gen, "dis": self.dis}[net]
        return layout.keras_variables(network, self.entries[net], only_trainable)

    def get_weights(self):
        return {
            net: numpy_copies(v.numpy() for v in self.variables(net)) for net in layout.NETWORKS
        }

    def set_weights(self, weights):
        layout.assign_weights(self.model, self.latent, self.variables, weights)

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (see layout.py): {"dis": (value, grads), "gen": (value, grads)} for
        the objectives `noise` names, in training mode, nothing updated."""
        (x,) = batch
        real = tf.convert_to_tensor(np.asarray(x, np.float32))
        objectives = {
            "dis": functools.partial(dis_loss, self.gen, self.dis, real),
            "gen": functools.partial(gen_loss, self.gen, self.dis),
        }
        answers = {}
        for name, z in layout.check_noise(noise, self.latent).items():
            with frozen_statistics(self.gen), frozen_statistics(self.dis):
                answers[name] = self.loss_and_gradients(
                    functools.partial(objectives[name], tf.convert_to_tensor(z)),
                    self.variables(name, only_trainable=True),
                )
        return answers

    def adam(self, net):
        """The network's optimizer, the variables it was built for, and its canonical order."""
        network, optimizer = {"gen": (self.gen, self.opt_gen), "dis": (self.dis, self.opt_dis)}[net]
        return optimizer, self.variables(net, only_trainable=True), network.trainable_variables

    def state(self):
        moments, steps = {}, {}
        for net in layout.NETWORKS:
            optimizer, variables, built_for = self.adam(net)
            first, second, steps[net] = self.adam_moments(optimizer, variables, built_for)
            moments[net] = (first, second)
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(ENGINE)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        for net in layout.NETWORKS:
            optimizer, variables, built_for = self.adam(net)
            self.load_adam_moments(optimizer, variables, *moments[net], steps[net], built_for)
        self.set_weights(weights)
