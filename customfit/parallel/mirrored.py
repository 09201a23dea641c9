"""tf.distribute.MirroredStrategy for the tensorflow and keras-tensorflow engines. On a CPU
the replicas are TensorFlow's logical CPUs, made once per process before TensorFlow starts
its runtime; with GPUs, the first N GPUs. Across hosts (TF_CONFIG), MultiWorkerMirroredStrategy:
the same replica code, its all-reduces between the workers' processes."""

import functools

import tensorflow as tf

from customfit import hosts
from customfit.core.layers import all_layers


def can_make(devices):
    """Whether this process has (or can still make) `devices` devices for MirroredStrategy."""
    try:
        _make_logical_cpus(devices)
    except RuntimeError:  # the runtime has started: its devices are fixed
        pass
    return len(_devices()) >= devices


def _make_logical_cpus(devices):
    if tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def _devices():
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


@functools.lru_cache(maxsize=None)
def strategy(devices):
    """The MirroredStrategy over `devices` replicas: one per process, shared by the Trainers
    made in it (two strategies in one process would number their collectives alike). Where
    TF_CONFIG names several workers (hosts), the MultiWorkerMirroredStrategy over them all: it
    reads TF_CONFIG itself, and must be made before TensorFlow starts its runtime."""
    if hosts.tf_config() is not None:
        made = tf.distribute.MultiWorkerMirroredStrategy()
        if made.num_replicas_in_sync != devices:
            raise RuntimeError(
                f"TF_CONFIG's workers hold {made.num_replicas_in_sync} devices; "
                f"{devices} were asked for"
            )
        return made
    if not can_make(devices):
        raise RuntimeError(
            f"TensorFlow has {len(_devices())} devices here; {devices} were asked "
            "for (logical CPUs are made before TensorFlow starts its runtime)"
        )
    return tf.distribute.MirroredStrategy(_devices()[:devices])


def synchronize_batch_norm(*models):
    """Every Keras BatchNormalization layer in `models` made synchronized (the layer's own
    argument, read when it is called): under the strategy, each replica normalizes with the
    statistics of the global batch, all-reduced, as one device computes them."""
    import keras

    for model in models:
        for layer in all_layers(model, include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
