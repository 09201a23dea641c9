"""The native tensorflow engine's plumbing, written once for every task family.

Each family's customfit/tasks/<family>/with_tensorflow.py holds what TensorFlow's own tutorials
hold (tf.keras networks, the losses, a tf.GradientTape step, the epoch loop); its Trainer
subclasses TensorFlowTrainer for the rest: the process check, the seed, one device or the replicas
of a tf.distribute strategy, the epoch's batches, Adam's moments as named arrays, and the
gradients the parity hook reads. Every array that leaves is a NumPy copy in Keras's layout, which
is the canonical one (customfit/trainers/canonical.py): tf.keras needs no conversion.
"""

import numpy as np
import tensorflow as tf

from customfit.trainers.keras_adam import adam_slots_for
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.tensorflow_checks import require_tensorflow_backend

ENGINE = "tensorflow"


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return tf.cast(h, tf.float32)


def tensor(array, dtype=np.float32):
    """An array (or anything np.asarray takes) as a tensor of NumPy's `dtype`."""
    return tf.convert_to_tensor(np.asarray(array, dtype))


def numpy_copies(tensors):
    """New float32 NumPy arrays, never views of live memory."""
    return [np.array(np.asarray(t), dtype=np.float32, order="C", copy=True) for t in tensors]


def built_adam(variables, learning_rate, **settings):
    """A Keras Adam whose moments are made now rather than at the first step, so that
    load_state can fill them."""
    optimizer = tf.keras.optimizers.Adam(learning_rate, **settings)
    optimizer.build(variables)
    return optimizer


class TensorFlowTrainer:
    """What every family's TensorFlow Trainer shares; the family builds its networks and
    optimizers under `self.strategy.scope()` after calling this __init__."""

    def __init__(self, seed, devices=1):
        require_tensorflow_backend()
        self.seed = seed
        # One device, or N replicas of a MirroredStrategy: networks and optimizers are made in
        # its scope (mirrored variables), each batch is split over the replicas.
        self.devices = devices
        self.strategy = tf.distribute.get_strategy() if devices == 1 else mirrored(devices)
        # Keras's initializers draw from the global seed: set it, and the weights follow `seed`.
        tf.keras.utils.set_random_seed(seed)

    # ---- the epoch's batches

    @staticmethod
    def seeded_shuffle(arrays, shuffle_seed):
        """tf.data's own shuffle. A seeded shuffle's order also depends on TF's global seed: it is
        pinned, so that the order is a function of shuffle_seed alone and a resumed run sees the
        same batches."""
        tf.random.set_seed(shuffle_seed)
        size = len(tf.nest.flatten(arrays)[0])
        return tf.data.Dataset.from_tensor_slices(arrays).shuffle(
            size, seed=shuffle_seed, reshuffle_each_iteration=False
        )

    @staticmethod
    def stateless_shuffle(x, shuffle_seed):
        """The order from a stateless shuffle keyed by shuffle_seed alone, so that a resumed run
        sees the same batches (pinning TF's global seed for Dataset.shuffle costs about a second
        per epoch: it drops TF's cached functions)."""
        order = tf.random.experimental.stateless_shuffle(tf.range(len(x)), seed=[shuffle_seed, 0])
        return tf.data.Dataset.from_tensor_slices(tf.gather(x, order))

    def batches(self, dataset, size, batch_size):
        """The dataset's `size` examples in batches: on N replicas distributed, each global batch
        split evenly over them (customfit/devices.py), the last few examples left out."""
        if self.devices == 1:
            return dataset.batch(batch_size)
        dataset = dataset.take(size - size % self.devices).batch(batch_size)
        return self.strategy.experimental_distribute_dataset(dataset)

    def global_rows(self, batch):
        """The global batch's rows: the replicas hold equal shares, and across hosts
        (MultiWorkerMirroredStrategy) only this worker's are local."""
        return (
            tf.shape(self.strategy.experimental_local_results(batch)[0])[0]
            * self.strategy.num_replicas_in_sync
        )

    def evaluate_figures(self, x, batch_size, names):
        """self.eval_step's figures over x's batches, each weighted by its rows: running means
        (evaluation is not split over replicas)."""
        means = RunningMeans(names)
        for batch in tf.data.Dataset.from_tensor_slices(x).batch(batch_size):
            means.add_all(self.eval_step(batch), int(batch.shape[0]))
        return means.means()

    # ---- the replicas

    def on_replicas(self, replica_step, *args, reduce=tf.distribute.ReduceOp.MEAN):
        """replica_step(*args) on every replica (on one device, simply called); what it returns
        reduced over the replicas: by default averaged (each a mean over an equal share)."""
        figures = self.strategy.run(replica_step, args=args)
        return tf.nest.map_structure(lambda v: self.strategy.reduce(reduce, v, None), figures)

    @staticmethod
    def replica_rows(global_draws, local, axis=0):
        """This replica's rows of what was drawn for the whole global batch, so that N replicas
        draw what one device draws."""
        start = tf.distribute.get_replica_context().replica_id_in_sync_group * local
        if axis == 0:
            return global_draws[start:][:local]
        return global_draws[:, start:][:, :local]

    @staticmethod
    def replica_share(loss):
        """A replica's loss (a mean over its share) divided by the number of replicas, whose
        gradients the optimizer sums (as tf.nn.compute_average_loss scales per-example losses)."""
        return loss / tf.distribute.get_replica_context().num_replicas_in_sync

    # ---- the parity hook

    @staticmethod
    def loss_and_gradients(objective, variables):
        """objective()'s value and its gradients with respect to `variables`, as NumPy: nothing
        is updated."""
        with tf.GradientTape() as tape:
            loss = objective()
        grads = tape.gradient(loss, variables)
        return float(loss), [g.numpy() for g in grads]

    # ---- optimizer state as named arrays

    @staticmethod
    def adam_moments(optimizer, variables, built_for=None):
        """(first moments, second moments, step) of a Keras Adam as NumPy arrays, one moment per
        variable of `variables` (see adam_slots)."""
        momentums, velocities = adam_slots(optimizer, variables, built_for)
        return (
            [m.numpy() for m in momentums],
            [v.numpy() for v in velocities],
            int(optimizer.iterations.numpy()),
        )

    @staticmethod
    def load_adam_moments(optimizer, variables, first, second, step, built_for=None):
        momentums, velocities = adam_slots(optimizer, variables, built_for)
        for variable, value in zip(momentums + velocities, list(first) + list(second)):
            variable.assign(value)
        optimizer.iterations.assign(step)


def adam_slots(optimizer, variables, built_for=None):
    """(momentums, velocities) of a Keras Adam, one per variable of `variables`, in their order;
    `built_for`: the variables the optimizer was built for, in that order (default: `variables`)."""
    built_for = list(variables if built_for is None else built_for)
    return adam_slots_for(optimizer, built_for, variables)


def mirrored(devices):
    from customfit.parallel import mirrored as mirrored_strategy

    return mirrored_strategy.strategy(devices)


def synchronize_batch_norm(*networks):
    """Batch norm over the global batch, as on one device: Keras's synchronized batch norm
    all-reduces each replica's statistics."""
    from customfit.parallel import mirrored as mirrored_strategy

    mirrored_strategy.synchronize_batch_norm(*networks)
