"""The GAN in TensorFlow: tf.keras layers, two optimizers, tf.GradientTape steps under
@tf.function, tf.data batches and a tf.random.Generator for the latents.

This is the lecture's TensorFlow workflow (and TensorFlow's DCGAN tutorial's): Keras only builds
the two networks; each update is a tape around its objective and apply_gradients for its own
network's variables. The network that is not being trained runs in training mode, but its
batch-norm moving statistics are saved and assigned back (`frozen_statistics`): in this family
an update moves its own network only (customfit/tasks/gan/layout.py).
"""

import contextlib

import numpy as np
import tensorflow as tf

from customfit.engines.native_checks import require_tensorflow_backend
from customfit.tasks.gan import layout
from customfit.trainers.keras_adam import keras_adam_slots

ENGINE = "tensorflow"
layers = tf.keras.layers


def batch_norm(settings):
    return layers.BatchNormalization(momentum=settings["bn_momentum"],
                                     epsilon=settings["bn_epsilon"])


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return tf.cast(h, tf.float32)


class LectureGenerator(tf.keras.Model):
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
        self(tf.keras.Input((latent,)))  # create the weights now, as the lecture does

    def call(self, z, training=False):
        h = self.norm0(self.reshape(self.dense(z)), training=training)
        h = self.norm1(self.up1(h), training=training)
        h = self.norm2(self.up2(h), training=training)
        return float32(self.out(h))


class LectureDiscriminator(tf.keras.Model):
    """The lecture's discriminator: 3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = layers.Conv2D(4, 3, activation="relu")
        self.conv2 = layers.Conv2D(8, 3, activation="relu")
        self.conv3 = layers.Conv2D(16, 3, activation="relu")
        self.flatten = layers.Flatten()
        self.logit = layers.Dense(1)
        self(tf.keras.Input(layout.IMAGE_SHAPE))

    def call(self, x, training=False):
        return float32(self.logit(self.flatten(self.conv3(self.conv2(self.conv1(x))))))


class Generator(tf.keras.Model):
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
        self(tf.keras.Input((latent,)))

    def call(self, z, training=False):
        h = tf.nn.relu(self.norm0(self.reshape(self.dense(z)), training=training))
        h = tf.nn.relu(self.norm1(self.up(h), training=training))
        return float32(self.out(h))


class Discriminator(tf.keras.Model):
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
        self(tf.keras.Input(layout.IMAGE_SHAPE))

    def call(self, x, training=False):
        h = tf.nn.leaky_relu(self.conv1(x), self.slope)
        h = tf.nn.leaky_relu(self.norm(self.conv2(h), training=training), self.slope)
        return float32(self.logit(self.flatten(h)))


NETWORKS = {"lecture": (LectureGenerator, LectureDiscriminator),
            "default": (Generator, Discriminator)}


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


def dis_loss(gen, dis, real, z, training=True):
    """mean softplus(-D(x)) + mean softplus(D(G(z))): the discriminator learns to tell the real
    digits (logit up) from the generator's (logit down)."""
    with frozen_statistics(gen):
        fake = tf.stop_gradient(gen(z, training=training))  # the generator is not trained here
    return (tf.reduce_mean(tf.math.softplus(-dis(real, training=training)))
            + tf.reduce_mean(tf.math.softplus(dis(fake, training=training))))


def gen_loss(gen, dis, z, training=True):
    """mean softplus(-D(G(z))): the non-saturating generator loss."""
    with frozen_statistics(dis):
        return tf.reduce_mean(tf.math.softplus(-dis(gen(z, training=training), training=training)))


class Means:
    """Batch-size-weighted running means of named losses, as Keras's trackers keep them."""

    def __init__(self, names):
        self.sums = dict.fromkeys(names, 0.0)
        self.counts = dict.fromkeys(names, 0)

    def add(self, name, value, n):
        self.sums[name] += float(value) * n
        self.counts[name] += n

    def means(self):
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}


class Trainer:
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        require_tensorflow_backend()
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        self.entries = layout.entries(model, latent)
        # One device, or N replicas of a MirroredStrategy: networks and optimizers are made in
        # its scope (mirrored variables), each batch is split over the replicas.
        self.devices = devices
        self.strategy = tf.distribute.get_strategy() if devices == 1 else _mirrored(devices)
        # Keras's initializers draw from the global seed: set it, and the weights follow `seed`.
        tf.keras.utils.set_random_seed(seed)
        Gen, Dis = NETWORKS[model]
        with self.strategy.scope():
            self.gen, self.dis = Gen(latent, name="gen"), Dis(name="dis")

            def adam():
                return tf.keras.optimizers.Adam(lr, beta_1=layout.MODELS[model]["beta_1"],
                                                beta_2=layout.BETA_2, epsilon=layout.ADAM_EPSILON)

            self.opt_gen, self.opt_dis = adam(), adam()
            # The Adam moments now rather than at the first step, so load_state can fill them.
            self.opt_gen.build(self.gen.trainable_variables)
            self.opt_dis.build(self.dis.trainable_variables)
        if devices > 1:
            # Batch norm over the global batch, as on one device: Keras's synchronized batch
            # norm all-reduces each replica's statistics.
            _synchronize_batch_norm(self.gen, self.dis)
        # Outside the strategy's scope: the latents of a global batch are drawn once, in the
        # order one device draws them, and each replica takes its share (_distributed_step).
        self.noise = tf.random.Generator.from_seed(0)  # reseeded every epoch

    # reduce_retracing: the last, shorter batch reuses the trace instead of making a new one.
    @tf.function(reduce_retracing=True)
    def _train_step(self, real):
        n = tf.shape(real)[0]
        dis_losses = []
        for _ in range(self.critic_steps):  # a Python loop: unrolled in the traced step
            with tf.GradientTape() as tape:
                loss_d = dis_loss(self.gen, self.dis, real, self._latents(n))
            grads = tape.gradient(loss_d, self.dis.trainable_variables)
            self.opt_dis.apply_gradients(zip(grads, self.dis.trainable_variables))
            dis_losses.append(loss_d)
        with tf.GradientTape() as tape:
            loss_g = gen_loss(self.gen, self.dis, self._latents(n))
        grads = tape.gradient(loss_g, self.gen.trainable_variables)
        self.opt_gen.apply_gradients(zip(grads, self.gen.trainable_variables))
        return tf.stack(dis_losses), loss_g

    def _global_rows(self, batch):
        """The global batch's rows: the replicas hold equal shares, and across hosts
        (MultiWorkerMirroredStrategy) only this worker's are local."""
        return tf.shape(self.strategy.experimental_local_results(batch)[0])[0] * \
            self.strategy.num_replicas_in_sync

    # The same step on N replicas. The latents are drawn for the global batch first, as one
    # device draws them; each replica takes its rows, and its losses (means over its share) are
    # divided by the number of replicas, whose gradients the optimizers sum (as
    # tf.nn.compute_average_loss scales per-example losses).
    @tf.function(reduce_retracing=True)
    def _distributed_step(self, real):
        n = self._global_rows(real)
        draws = tf.stack([self._latents(n) for _ in range(self.critic_steps + 1)])

        def replica_step(real, draws):
            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync
            local = tf.shape(real)[0]
            own = draws[:, context.replica_id_in_sync_group * local:][:, :local]
            dis_losses = []
            for i in range(self.critic_steps):
                with tf.GradientTape() as tape:
                    loss_d = dis_loss(self.gen, self.dis, real, own[i])
                    scaled = loss_d / replicas
                grads = tape.gradient(scaled, self.dis.trainable_variables)
                self.opt_dis.apply_gradients(zip(grads, self.dis.trainable_variables))
                dis_losses.append(loss_d)
            with tf.GradientTape() as tape:
                loss_g = gen_loss(self.gen, self.dis, own[-1])
                scaled = loss_g / replicas
            grads = tape.gradient(scaled, self.gen.trainable_variables)
            self.opt_gen.apply_gradients(zip(grads, self.gen.trainable_variables))
            return tf.stack(dis_losses), loss_g

        dis_losses, loss_g = self.strategy.run(replica_step, args=(real, draws))
        mean = tf.distribute.ReduceOp.MEAN  # equal shares: the mean of the replicas' means
        return (self.strategy.reduce(mean, dis_losses, None),
                self.strategy.reduce(mean, loss_g, None))

    @tf.function(reduce_retracing=True)
    def _eval_step(self, real):
        n = tf.shape(real)[0]
        loss_d = dis_loss(self.gen, self.dis, real, self._latents(n), training=False)
        loss_g = gen_loss(self.gen, self.dis, self._latents(n), training=False)
        return loss_d, loss_g

    def _latents(self, n):
        return self.noise.normal((n, self.latent))

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # A seeded shuffle's order also depends on TF's global seed: pin it, so that the order is
        # a function of shuffle_seed alone and a resumed run sees the same batches; the latents'
        # generator is reseeded from it too.
        tf.random.set_seed(shuffle_seed)
        self.noise.reset_from_seed(layout.noise_seed(shuffle_seed))
        dataset = (tf.data.Dataset.from_tensor_slices(np.asarray(x, np.float32))
                   .shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=False))
        if self.devices == 1:
            batches, step = dataset.batch(batch_size), self._train_step
        else:
            # Every global batch splits evenly over the replicas (customfit/devices.py).
            dataset = dataset.take(len(x) - len(x) % self.devices).batch(batch_size)
            batches = self.strategy.experimental_distribute_dataset(dataset)
            step = self._distributed_step
        tally = Means(("dis_loss", "gen_loss"))
        for real in batches:
            n = int(self._global_rows(real))
            dis_losses, loss_g = step(real)
            for loss_d in dis_losses.numpy():
                tally.add("dis_loss", loss_d, n)
            tally.add("gen_loss", loss_g, n)
            on_batch(tally.means())
        return tally.means()

    def evaluate(self, x, batch_size):
        self.noise.reset_from_seed(layout.EVAL_SEED)
        tally = Means(("dis_loss", "gen_loss"))
        for real in tf.data.Dataset.from_tensor_slices(np.asarray(x, np.float32)).batch(batch_size):
            loss_d, loss_g = self._eval_step(real)
            tally.add("dis_loss", loss_d, int(real.shape[0]))
            tally.add("gen_loss", loss_g, int(real.shape[0]))
        return tally.means()

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        images = self.gen(tf.convert_to_tensor(np.asarray(z, np.float32)), training=False)
        return images.numpy()[..., 0].copy()

    def sample(self, n, seed):
        """n digits from n latents drawn by a tf.random.Generator seeded with `seed`."""
        return self.generate(tf.random.Generator.from_seed(seed).normal((n, self.latent)).numpy())

    # ---- weights, the parity hook, state: every array in the canonical layout (layout.py)

    def _networks(self):
        return {"gen": self.gen, "dis": self.dis}

    def _variables(self, net, only_trainable=False):
        chosen = layout.trainable(self.entries[net]) if only_trainable else self.entries[net]
        return [layout.find(self._networks()[net], e, "keras") for e in chosen]

    def get_weights(self):
        return {net: [np.array(v.numpy(), copy=True) for v in self._variables(net)]
                for net in layout.NETWORKS}

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
        real = tf.convert_to_tensor(np.asarray(x, np.float32))
        answers = {}
        for name, z in noise.items():
            params = self._variables(name, only_trainable=True)
            with frozen_statistics(self.gen), frozen_statistics(self.dis):
                with tf.GradientTape() as tape:
                    z = tf.convert_to_tensor(z)
                    loss = (dis_loss(self.gen, self.dis, real, z) if name == "dis"
                            else gen_loss(self.gen, self.dis, z))
                grads = tape.gradient(loss, params)
            answers[name] = (float(loss), [g.numpy() for g in grads])
        return answers

    def _optimizers(self):
        return {"gen": self.opt_gen, "dis": self.opt_dis}

    def _slots(self, net):
        """Each trainable entry's (momentum, velocity) variables, in canonical order."""
        built_for = list(self._networks()[net].trainable_variables)
        momentums, velocities = keras_adam_slots(self._optimizers()[net],
                                                                    built_for)
        where = {id(v): i for i, v in enumerate(built_for)}
        order = [where[id(v)] for v in self._variables(net, only_trainable=True)]
        return [momentums[i] for i in order], [velocities[i] for i in order]

    def state(self):
        moments, steps = {}, {}
        for net in layout.NETWORKS:
            momentums, velocities = self._slots(net)
            moments[net] = ([v.numpy() for v in momentums], [v.numpy() for v in velocities])
            steps[net] = int(self._optimizers()[net].iterations.numpy())
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(ENGINE)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        for net in layout.NETWORKS:
            momentums, velocities = self._slots(net)
            for variable, value in zip(momentums + velocities, moments[net][0] + moments[net][1]):
                variable.assign(value)
            self._optimizers()[net].iterations.assign(steps[net])


def _mirrored(devices):
    from customfit.parallel import mirrored

    return mirrored.strategy(devices)


def _synchronize_batch_norm(*networks):
    from customfit.parallel import mirrored

    mirrored.synchronize_batch_norm(*networks)
