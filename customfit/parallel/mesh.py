"""A jax.sharding mesh for the flax engine: the batch axis sharded over N devices, every weight
and optimizer slot replicated. The step itself is unchanged: jit compiles one program for the
global batch, and XLA inserts the all-reduces (batch-norm statistics included), so N devices
compute what one computes. On a CPU the devices are XLA's host devices
(customfit.devices.prepare sets --xla_force_host_platform_device_count before JAX starts).
Across hosts (customfit/parallel/coordinator.py) the mesh holds every process's devices, the
devices of process 0 first, and each process feeds its own rows of a global batch."""

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class BatchMesh:
    def __init__(self, devices):
        found = jax.devices()
        if len(found) < devices:
            raise RuntimeError(
                f"JAX has {len(found)} devices here; {devices} were asked for "
                "(host devices are made before JAX starts)"
            )
        self.devices = devices
        self.mesh = Mesh(np.array(found[:devices]), ("batch",))
        self.batch = NamedSharding(self.mesh, PartitionSpec("batch"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def replicate(self, *objects):
        """Put every array of these nnx objects (models, optimizers) on every device."""
        for obj in objects:
            state = nnx.state(obj)
            nnx.update(obj, jax.device_put(state, self.replicated))

    def shard(self, array):
        """A global batch, split along its first axis over the devices. Across hosts every
        process holds the global batch's indices but feeds only its own devices' rows."""
        array = np.asarray(array)
        if jax.process_count() == 1:
            return jax.device_put(array, self.batch)
        rows = [
            index[0].indices(len(array))[:2]
            for index in self.batch.addressable_devices_indices_map(array.shape).values()
        ]
        start, stop = min(r[0] for r in rows), max(r[1] for r in rows)
        return jax.make_array_from_process_local_data(self.batch, array[start:stop], array.shape)
