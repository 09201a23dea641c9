"""Data parallelism for the keras-* engines: cf.Model's fit() on N devices, each backend through
its framework's own machinery.

  jax         keras.distribution.DataParallel: the batch sharded over a device mesh, the
              variables replicated; one program for the global batch (batch-norm statistics
              and random draws are global, as on one device)
  tensorflow  tf.distribute.MirroredStrategy: the model and its optimizers made in the
              strategy's scope, fit() splits each batch over the replicas; cf.Model's step
              scales the loss for the sum of the replicas' gradients, as Keras's losses do
  torch       the torch.distributed process group of customfit.parallel.process_group: each
              process fits its share of every batch, and cf.Model's torch step all-reduces
              the gradients before each optimizer applies them, as DistributedDataParallel does

A Trainer builds and fits inside scope(), takes an epoch's samples from epoch_order() with
batch_size(B) per call of fit(), and reports means_over_devices() of fit()'s figures.
"""

import contextlib

import keras
import numpy as np

from customfit.parallel import shares


class DataParallel:
    def __init__(self, devices):
        self.devices = devices
        self.backend = keras.backend.backend()
        self._scope = contextlib.nullcontext
        if devices == 1:
            return
        if self.backend == "jax":
            found = keras.distribution.list_devices()
            if len(found) < devices:
                raise RuntimeError(f"JAX has {len(found)} devices here; {devices} were asked for")
            self._distribution = keras.distribution.DataParallel(devices=found[:devices])
            # Across hosts each process hands fit() its own share already (epoch_order).
            self._distribution.auto_shard_dataset = False
            self._scope = self._distribution.scope
        elif self.backend == "tensorflow":
            from customfit.parallel import mirrored

            self._scope = mirrored.strategy(devices).scope
        else:
            from customfit.parallel import process_group

            process_group.check_world(devices)
            self._scope = _sharing

    def scope(self):
        """Where the model is built and fit() runs."""
        return self._scope()

    def epoch_order(self, order, batch_size):
        """The sample indices this process fits in an epoch, from the epoch's permutation and
        the global batch size."""
        if self.devices == 1:
            return order
        if self.backend == "torch":
            from customfit.parallel import process_group

            return np.asarray(process_group.share(shares.epoch_order(order, self.devices)))
        order = shares.epoch_order(order, self.devices)
        if self._processes() == 1:
            return order
        # Across hosts Keras assembles each global batch from every process's share of it
        # (jax.make_array_from_process_local_data), process 0's rows first: this process fits
        # its block of every global batch.
        import jax

        p, index = self._processes(), jax.process_index()
        share = [
            batch[index * (len(batch) // p) : (index + 1) * (len(batch) // p)]
            for batch in (order[s : s + batch_size] for s in range(0, len(order), batch_size))
        ]
        return np.concatenate(share)

    def batch_size(self, global_batch):
        """fit()'s batch size here: the global batch, or this process's share of it."""
        if self.backend == "torch":
            return global_batch // self.devices
        return global_batch // self._processes()

    def _processes(self):
        """The processes sharing the devices: the JAX processes across hosts, else one."""
        if self.devices == 1 or self.backend != "jax":
            return 1
        import jax

        return jax.process_count()

    def synchronize_batch_norm(self, model):
        """Batch norm over the global batch where the backend can: Keras's synchronized batch
        norm under tf.distribute (under keras.distribution the program is the global batch's
        already; Keras has no synchronized batch norm on torch: there, each process normalizes
        with its own share's statistics, as DistributedDataParallel does without SyncBatchNorm)."""
        if self.devices > 1 and self.backend == "tensorflow":
            from customfit.parallel import mirrored

            mirrored.synchronize_batch_norm(model)

    def means_over_devices(self, logs):
        if self.devices > 1 and self.backend == "torch":
            from customfit.parallel import process_group

            return process_group.mean_over_processes(logs)
        return logs


def own_rows(draw, n):
    """This replica's rows of a global batch's random draw, paired with its rows of the batch:
    draw(rows) gives `rows` rows (from a SeedGenerator). On one device, draw(n); on R replicas
    each draws the global batch's n R rows, as one device would, and keeps the rows of the
    samples it holds: tf.distribute gives replica i the i-th block of n, a torch process the
    rows i, i + R, ... (as DistributedSampler deals them)."""
    index, replicas = replica()
    if replicas == 1:
        return draw(n)
    whole = draw(n * replicas)
    if keras.backend.backend() == "tensorflow":
        return keras.ops.take(keras.ops.reshape(whole, (replicas, n, -1)), index, axis=0)
    return keras.ops.take(keras.ops.reshape(whole, (n, replicas, -1)), index, axis=1)


def replica():
    """(index, count) of the replica running this code: (0, 1) on one device and under
    keras.distribution (one program for the global batch); a tf.distribute replica's id and
    count inside a MirroredStrategy step; a process's rank and world size in a torch group."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return 0, 1
        return context.replica_id_in_sync_group, context.num_replicas_in_sync
    if backend == "torch" and _shared:
        from customfit.parallel import process_group

        return process_group.rank(), process_group.world()
    return 0, 1


# Inside fit() on keras-torch: each process holds its share of every batch. Outside it
# (evaluate, predict) every process computes on whole batches, as one device does.
_shared = []


@contextlib.contextmanager
def _sharing():
    _shared.append(True)
    try:
        yield
    finally:
        _shared.pop()
