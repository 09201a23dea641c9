"""`--devices N`: which runs can be spread over N devices, how many this machine can make, and
how an epoch's samples are dealt out. Imports no framework.

Each engine spreads a run its own framework's way (customfit/parallel/): keras-jax through
keras.distribution.DataParallel, flax through a jax.sharding mesh, tensorflow and
keras-tensorflow through tf.distribute.MirroredStrategy, torch through DistributedDataParallel
and keras-torch through the same torch.distributed process group. On a CPU the devices are made
the framework's way too: XLA's host device count, TensorFlow's logical CPUs, N gloo processes.

What every engine does alike, so that N devices train as one device does with the same global
batch B: each global batch is split in N equal shares (B must be a multiple of N), and an
epoch uses the largest multiple of N of its shuffled samples (at most N - 1 are left out, other
ones each epoch), as torch's DistributedSampler(drop_last=True) deals them.

Across hosts (customfit/hosts.py) N counts every host's devices: one per TensorFlow worker, an
equal share per JAX process, one per torchrun process.

Floors: hosts.py and parallel/ lie below this module and never import it (parallel/ holds each
framework's way, this module the checks over all of them); parallel/'s framework modules are
imported here only inside functions, so that checking a run imports no framework.
"""

import os
import sys

from customfit import hosts, registry, validate
from customfit.errors import UsageError

# LAUNCHED_HERE and epoch_order are read here too, by the runner and the engines.
from customfit.parallel.shares import LAUNCHED_HERE, cores, epoch_order  # noqa: F401

# Task families whose Trainers take `devices`. The adversarial task attacks a trained model (one
# optimisation per image pair, no weights trained).
FAMILIES = ("classifier", "gan", "vae")


def _engines_on(framework):
    """The engines whose process runs `framework` (its Keras backend), spread its way."""
    return tuple(e for e in registry.ENGINES if registry.KERAS_BACKEND[e] == framework)


TORCH_ENGINES = _engines_on("torch")
JAX_ENGINES = _engines_on("jax")
TENSORFLOW_ENGINES = _engines_on("tensorflow")
_XLA_FLAG = "--xla_force_host_platform_device_count"


def most():
    """How many devices this machine makes for one run: one per CPU core (more would share
    cores, and gain nothing)."""
    return cores()


def tasks_that_can():
    return tuple(t for t in registry.TASKS if registry.spec(t).FAMILY in FAMILIES)


def check(task, engine, devices, batch_size):
    """`devices` as the run will use it; a UsageError (one line) if this run cannot have it."""
    n = validate.positive_int("devices", devices)
    cluster = hosts.of(engine)  # several hosts (TF_CONFIG, KERAS_DISTRIBUTION_*), checked
    if n == 1 and cluster is None:
        return n
    if registry.spec(task).FAMILY not in FAMILIES:
        if cluster is not None:
            raise UsageError.expected(
                "devices",
                f"one host for task {task} (tasks that train across hosts: "
                f"{', '.join(tasks_that_can())})",
                given=f"{cluster.setting} naming {cluster.processes} processes",
            )
        raise UsageError.expected(
            "devices",
            f"1 for task {task} (tasks that train on several devices: "
            f"{', '.join(tasks_that_can())})",
            n,
        )
    launched = launched_world()
    if cluster is not None:
        local = per_host(engine, n, cluster)
    elif engine in TORCH_ENGINES and launched is not None:
        # Started by torchrun: the processes are already there, one device each.
        if n != launched[0]:
            raise UsageError.expected(
                "devices", f"{launched[0]}, the number of processes torchrun started", n
            )
        local = launched[1]
    else:
        local = n
    if local > most():
        raise UsageError.expected(
            "devices", f"at most {most()} on this machine ({cores()} CPU cores, one device each)", n
        )
    if batch_size % n:
        raise UsageError.expected(
            "batch_size",
            f"a multiple of --devices {n} (each device takes an equal share of a batch)",
            batch_size,
        )
    return n


def per_host(engine, devices, cluster):
    """The devices each of the cluster's processes holds: on the TensorFlow engines one (a
    MultiWorkerMirroredStrategy worker trains on its CPU as one device), on the JAX engines an
    equal share of `devices` (XLA host devices)."""
    p = cluster.processes
    if engine in TENSORFLOW_ENGINES and devices != p:
        raise UsageError.expected(
            "devices",
            f"{p}, one device on each of the {p} processes {cluster.setting} names",
            devices,
        )
    if devices % p:
        raise UsageError.expected(
            "devices",
            f"a multiple of the {p} processes {cluster.setting} names (each holds "
            "an equal share of the devices)",
            devices,
        )
    return devices // p


def launched_world():
    """(world size, processes on this host) when torchrun (or customfit's own launch) started
    this process as one of several; else None."""
    world = os.environ.get("WORLD_SIZE")
    if world is None or "RANK" not in os.environ:
        return None
    return int(world), int(os.environ.get("LOCAL_WORLD_SIZE", world))


def prepare(engine, devices):
    """Before the engine's framework is imported: ask XLA for this host's share of `devices`
    host devices (JAX makes its CPU devices at start-up, from this flag). Other engines make
    theirs after import."""
    cluster = hosts.of(engine)
    local = devices if cluster is None else devices // cluster.processes
    if engine in JAX_ENGINES and local > 1:
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_XLA_FLAG)]
        os.environ["XLA_FLAGS"] = " ".join(flags + [f"{_XLA_FLAG}={local}"])


def needs_fresh_process(engine, devices):
    """True when this process has started the engine's framework already with fewer devices
    than asked for (JAX's device count and TensorFlow's logical CPUs are fixed at start-up), or
    before joining the hosts' processes (jax.distributed.initialize and TensorFlow's
    MultiWorkerMirroredStrategy come before the framework's runtime starts)."""
    if hosts.of(engine) is not None:
        if engine in JAX_ENGINES and "jax" in sys.modules:
            import jax

            return not jax.distributed.is_initialized()
        return engine in TENSORFLOW_ENGINES and "tensorflow" in sys.modules
    if devices <= 1:
        return False
    if engine in JAX_ENGINES and "jax" in sys.modules:
        import jax

        return jax.device_count() < devices
    if engine in TENSORFLOW_ENGINES and "tensorflow" in sys.modules:
        from customfit.parallel import mirrored

        return not mirrored.can_make(devices)
    return False
