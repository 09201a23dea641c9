"""`--device cpu|gpu`: whether a run computes on the CPU or a GPU, decided once per process,
before the Trainer is built. Importing this module imports no framework.

- cpu: the GPUs are hidden from the framework before it starts (CUDA_VISIBLE_DEVICES for
  TensorFlow and torch, JAX_PLATFORMS for JAX), so that nothing lands on one by default.
- gpu: the framework must see one (else one line, exit status 2). TensorFlow, JAX and Keras put
  the work there themselves; the native torch Trainer of the classifier family (toy, digits,
  mnist: exercise 10's CPU-against-GPU tasks) moves its model and batches to `torch_device()`.
  The other native torch Trainers keep their tensors on the CPU, so they refuse gpu, as do the
  torch engines on several devices (gloo processes on the CPU).
- not given: the GPU where the engine's framework sees one and its Trainer can use it, else the
  CPU.

One process runs one engine (customfit.registry.KERAS_BACKEND), so one process-wide choice is
enough, as for precision (customfit/precision.py, which asks `on_gpu()` for its dtype).
"""

import os
import sys

from customfit import registry, validate
from customfit.devices import TORCH_ENGINES
from customfit.errors import UsageError

CHOICES = ("cpu", "gpu")
# Native torch Trainers that place their tensors on torch_device(); every other engine's
# framework places its own.
TORCH_GPU_FAMILIES = ("classifier",)
# Each engine's framework is its Keras backend's: tensorflow, torch or jax.
_FRAMEWORK = registry.KERAS_BACKEND

_current = {"device": "cpu"}


def check(value):
    """The device as given (None: choose), or a UsageError (one line)."""
    return None if value is None else validate.one_of("device", value, CHOICES)


def trainer_can_use_gpu(task, engine, devices=1):
    """task None: `customfit bench`'s workloads, whose torch versions all place their tensors."""
    if engine in TORCH_ENGINES and devices > 1:
        return False  # N gloo processes on the CPU (customfit/parallel/process_group.py)
    if engine != "torch" or task is None:
        return True
    return registry.spec(task).FAMILY in TORCH_GPU_FAMILIES


def framework_sees_gpu(engine):
    """Whether the engine's framework sees a GPU in this process (this imports it)."""
    framework = _FRAMEWORK[engine]
    if framework == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if framework == "torch":
        import torch

        return torch.cuda.is_available()
    import jax

    return any(d.platform == "gpu" for d in jax.devices())


def hide_gpus(engine):
    """Before the framework starts: it will see no GPU."""
    framework = _FRAMEWORK[engine]
    if framework in sys.modules:
        return  # too late to hide anything; choose() has found what it sees
    if framework == "jax":
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"


def hide_if_asked(engine, wanted):
    """--device cpu: hide the GPUs now, before anything starts the framework (joining JAX's
    coordinator across hosts imports JAX, and must come before use() asks JAX what it sees)."""
    if check(wanted) == "cpu":
        hide_gpus(engine)


def choose(task, engine, wanted, devices=1):
    """ "cpu" or "gpu" for this run; a UsageError where `wanted` cannot be had."""
    if wanted == "cpu":
        return "cpu"
    can = trainer_can_use_gpu(task, engine, devices)
    if wanted == "gpu":
        if not can and devices > 1:
            raise UsageError.expected(
                "device",
                f"cpu with --devices {devices} on {engine} (its processes spread over "
                "the CPU, through gloo)",
                wanted,
            )
        if not can:
            raise UsageError.expected(
                "device",
                f"cpu for task {task} on torch (the native torch engine computes on a "
                f"GPU for {', '.join(tasks_on_torch_gpu())})",
                wanted,
            )
        if not framework_sees_gpu(engine):
            raise UsageError.expected(
                "device",
                f"cpu, or gpu on a machine where {_FRAMEWORK[engine]} sees one",
                given=f"gpu ({_FRAMEWORK[engine]} sees no GPU here)",
            )
        return "gpu"
    return "gpu" if can and framework_sees_gpu(engine) else "cpu"


def use(task, engine, wanted, devices=1):
    """Choose this process's device before the Trainer is built; returns "cpu" or "gpu"."""
    device = choose(task, engine, check(wanted), devices)
    if device == "cpu":
        hide_gpus(engine)
    _current["device"] = device
    return device


def current():
    """ "cpu" or "gpu": what use() chose in this process."""
    return _current["device"]


def on_gpu():
    return _current["device"] == "gpu"


def torch_device():
    """Where a native torch Trainer of TORCH_GPU_FAMILIES keeps its model and batches."""
    import torch

    return torch.device("cuda" if on_gpu() else "cpu")


def tasks_on_torch_gpu():
    return tuple(t for t in registry.TASKS if registry.spec(t).FAMILY in TORCH_GPU_FAMILIES)
