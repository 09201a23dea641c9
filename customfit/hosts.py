"""Several hosts: which processes a run is one of, read from the environment variable each
framework's own launch uses, and checked before anything starts. Imports no framework.

  tensorflow, keras-tensorflow  TF_CONFIG, as tf.distribute.MultiWorkerMirroredStrategy reads it:
                                {"cluster": {"worker": ["host0:12345", "host1:12345"]},
                                 "task": {"type": "worker", "index": 0}}
  flax, keras-jax               KERAS_DISTRIBUTION_JOB_ADDRESSES (the first is the coordinator),
                                KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID,
                                as keras.distribution.initialize() reads them; the flax engine
                                passes the same values to jax.distributed.initialize()
  torch, keras-torch            torchrun (RANK, WORLD_SIZE: customfit.devices.launched_world)

Every process runs the same command; process 0 (TF's chief: worker 0, or the "chief" task)
writes the run's folder, the others train and judge alike (every collective needs them all)
and write into a scratch folder that goes when the run ends.

Below customfit/devices.py and parallel/ (both read this module); imports neither.
"""

import json
import os
from typing import NamedTuple

from customfit import registry
from customfit.errors import UsageError, shortened

JAX_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
_TF_CONFIG_FORM = (
    'JSON {"cluster": {"worker": ["HOST:PORT", ...]}, "task": {"type": "worker", '
    '"index": I}} with I one of the workers'
)


class Hosts(NamedTuple):
    processes: int  # in the whole run, on every host
    index: int  # this process's: 0 writes
    setting: str  # the environment variable(s) that said so
    coordinator: str = None  # JAX's coordinator address (host:port)


def tf_config():
    """The processes TF_CONFIG names, or None where it is unset or names one worker."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        # MultiWorkerMirroredStrategy's jobs: an optional chief (task 0), then the workers.
        jobs = [("chief", i) for i, _ in enumerate(cluster.get("chief", []))] + [
            ("worker", i) for i, _ in enumerate(cluster.get("worker", []))
        ]
        addresses = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
        index = jobs.index((task["type"], task["index"]))
        if not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ValueError(addresses)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError.expected(
            "TF_CONFIG", _TF_CONFIG_FORM, given=repr(shortened(text, 80))
        ) from None
    if len(jobs) == 1:
        return None
    return Hosts(len(jobs), index, "TF_CONFIG")


def keras_distribution():
    """The processes KERAS_DISTRIBUTION_* name, or None where they are unset or name one."""
    given = {name: os.environ.get(name) for name in JAX_VARIABLES}
    if not any(given.values()):
        return None
    addresses, count, index = (given[name] for name in JAX_VARIABLES)
    missing = [name for name in JAX_VARIABLES if not given[name]]
    if missing:
        raise UsageError.expected(
            missing[0], f"all of {', '.join(JAX_VARIABLES)} set", given="it unset"
        )
    try:
        processes = int(count)
        if processes < 1:
            raise ValueError(count)
    except ValueError:
        raise UsageError.expected(JAX_VARIABLES[1], "an integer > 0", count) from None
    try:
        position = int(index)
        if not 0 <= position < processes:
            raise ValueError(index)
    except ValueError:
        raise UsageError.expected(
            JAX_VARIABLES[2], f"an integer from 0 to {processes - 1}", index
        ) from None
    listed = addresses.split(",")
    if not all(":" in a for a in listed) or len(listed) not in (1, processes):
        raise UsageError.expected(
            JAX_VARIABLES[0],
            f"HOST:PORT of process 0, or the {processes} processes' HOST:PORT separated by commas",
            addresses,
        )
    if processes == 1:
        return None
    return Hosts(processes, position, "KERAS_DISTRIBUTION_*", coordinator=listed[0])


_ENGINES_OF = {
    "TF_CONFIG": "tensorflow or keras-tensorflow",
    "KERAS_DISTRIBUTION_*": "flax or keras-jax",
}
# The setting each framework's launch reads (torch's, torchrun's, is read by devices.py).
_SETTING_OF = {"tensorflow": "TF_CONFIG", "jax": "KERAS_DISTRIBUTION_*"}


def of(engine):
    """The hosts a run of `engine` spans (None: this host alone). A setting for another
    framework's launch is a mistake, not something to ignore."""
    found = {"TF_CONFIG": tf_config(), "KERAS_DISTRIBUTION_*": keras_distribution()}
    reads = _SETTING_OF.get(registry.KERAS_BACKEND.get(engine))
    for setting, hosts in found.items():
        if hosts is not None and setting != reads:
            how = reads or "torchrun --nnodes"
            raise UsageError.expected(
                "engine",
                f"{_ENGINES_OF[setting]} where {setting} names several processes "
                f"({engine} spreads over hosts with {how})",
                engine,
            )
    return found[reads] if reads else None
