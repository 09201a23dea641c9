"""The JAX engines across hosts: every process joins JAX's coordinator before JAX starts its
backends, after which jax.devices() lists every process's devices and one jitted program spans
them (on a CPU, XLA's collectives between processes are gloo's, JAX's default there).

keras-jax joins through keras.distribution.initialize(), which reads KERAS_DISTRIBUTION_*
itself (and agrees a random seed between the processes); flax calls jax.distributed.initialize
with the same values (customfit.hosts)."""


def join(engine, cluster):
    if engine == "keras-jax":
        import keras

        keras.distribution.initialize()
        return
    import jax

    jax.distributed.initialize(
        coordinator_address=cluster.coordinator,
        num_processes=cluster.processes,
        process_id=cluster.index,
    )
