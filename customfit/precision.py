"""`--precision float32|mixed`: which dtypes a run computes in, decided once per engine and
device, so that no Trainer decides it for itself. Importing this module imports no framework.

"mixed" keeps every weight and optimizer slot in float32 and computes in a 16-bit float, each
framework its own way:

- keras-* and tensorflow: Keras's dtype policy (`keras.config.set_dtype_policy`; TensorFlow
  2.21's tf.keras is Keras 3 and shares it): mixed_float16 where a GPU is visible, with Keras's
  LossScaleOptimizer; mixed_bfloat16 on a CPU, whose range needs no loss scaling.
- torch: `torch.autocast` around the networks' forward passes (`autocast_forward`), bfloat16
  on the CPU; float16 on a GPU (customfit/compute_device.py) adds `torch.amp.GradScaler` to the
  loop (`grad_scaler`).
- flax: the layers' compute `dtype=jnp.bfloat16`, `param_dtype` float32 (`compute_dtype`,
  `compute_in`; optax has no loss scaler, so Flax stays on bfloat16 on a GPU too).

Whatever leaves a network for a loss or a judge is cast back to float32 by the Trainer (the
framework's cast; `float32_outputs` again at the judge's door), so losses and reductions run in
float32 and the judge reads float32 arrays.

The runner calls `use(engine, precision)` before the Trainer is built; the Trainers ask
`mixed()`, `autocast()`, `grad_scaler()`, `compute_dtype()`, `loss_scaled()`. One process runs
one engine (customfit.registry.KERAS_BACKEND), so one process-wide choice is enough, as Keras's
own global policy is.
"""

import contextlib
import functools

from customfit import validate

CHOICES = ("float32", "mixed")
DEFAULT = "float32"

_KERAS_POLICY_ENGINES = ("tensorflow", "keras-tensorflow", "keras-torch", "keras-jax")

_current = {"engine": None, "policy": "float32"}


def check(value):
    """The precision as a run uses it; a UsageError (one line) if it is not one of CHOICES."""
    return validate.one_of("precision", value, CHOICES)


def choose(engine, precision, gpu):
    """The dtype policy for `engine` at `precision` ("float32" or "mixed") with or without a
    GPU: "float32", "mixed_bfloat16" or "mixed_float16". Pure: tests call it with any device."""
    if precision == "float32":
        return "float32"
    # float16 needs loss scaling; bfloat16 has float32's range and does not. A CPU computes
    # bfloat16 natively; Flax has no loss scaler of its own.
    if gpu and engine != "flax":
        return "mixed_float16"
    return "mixed_bfloat16"


def use(engine, precision, gpu=None):
    """Set this process's precision for `engine` before its Trainer is built; returns the
    policy used. For the Keras-based engines this sets Keras's global dtype policy.
    gpu: plan for a GPU (float16 with loss scaling) or not; None: where the run computes
    (customfit/compute_device.py). Tests pass True to run the float16 path, loss scaler
    included, on a CPU."""
    check(precision)
    if gpu is None:
        from customfit import compute_device

        gpu = compute_device.on_gpu()
    chosen = choose(engine, precision, gpu)
    if engine in _KERAS_POLICY_ENGINES:
        import keras

        keras.config.set_dtype_policy(chosen)
    _current.update(engine=engine, policy=chosen)
    return chosen


def policy():
    """The policy `use` set: "float32", "mixed_bfloat16" or "mixed_float16"."""
    return _current["policy"]


def mixed():
    return _current["policy"] != "float32"


def half_dtype_name():
    """ "bfloat16" or "float16" under a mixed policy, else None."""
    return {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(_current["policy"])


# ----------------------------------------------------------------------------- torch


def _torch_device_type():
    from customfit import compute_device

    return "cuda" if compute_device.on_gpu() else "cpu"


def autocast():
    """torch.autocast at the chosen dtype on the run's device, or a context that changes
    nothing under float32."""
    name = half_dtype_name()
    if name is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(_torch_device_type(), dtype=getattr(torch, name))


def autocast_forward(forward):
    """A module's forward() under autocast() (torch's AMP guide allows it as a decorator on
    forward), its floating outputs handed back in float32: the losses, the samples and the
    judge's inputs outside it stay float32, and backward() runs outside autocast as the guide
    asks. Under float32 it changes nothing."""

    @functools.wraps(forward)
    def forward_in_precision(*args, **kwargs):
        if not mixed():
            return forward(*args, **kwargs)
        with autocast():
            return _float32(forward(*args, **kwargs))

    return forward_in_precision


def _float32(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_float32(v) for v in value)
    if value.is_floating_point():
        return value.float()
    return value


def grad_scaler():
    """torch.amp.GradScaler on the run's device, enabled only under float16 (bfloat16 and
    float32 need none; a disabled scaler passes losses and steps through unchanged)."""
    import torch

    return torch.amp.GradScaler(_torch_device_type(), enabled=half_dtype_name() == "float16")


# ----------------------------------------------------------------------------- flax


def compute_dtype():
    """jnp.bfloat16 under mixed (Flax layers' `dtype=`), None (the inputs' dtype) under float32."""
    if not mixed():
        return None
    import jax.numpy as jnp

    return jnp.bfloat16


# ----------------------------------------------------------------------------- tensorflow


def loss_scaled(optimizer):
    """Under mixed_float16, Keras's LossScaleOptimizer around `optimizer` (it scales the loss
    with scale_loss() and unscales and checks the gradients in apply()); else `optimizer`."""
    if _current["policy"] != "mixed_float16":
        return optimizer
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer)


def float32_outputs(outputs):
    """What a task produces for its judge, with any 16-bit float array cast to float32 (NumPy
    sees bfloat16 as ml_dtypes' type, which not every NumPy function takes)."""
    import numpy as np

    def widen(a):
        if isinstance(a, np.ndarray) and a.dtype.name in ("float16", "bfloat16"):
            return a.astype(np.float32)
        return a

    return {name: widen(a) for name, a in outputs.items()}


def compute_in(model):
    """Flax: `model`'s dense and convolution layers compute in compute_dtype() (their `dtype`,
    the constructor's argument of that name), their parameters staying float32 (`param_dtype`).
    Batch norm keeps computing in float32, as Keras's does under a mixed policy. Returns model."""
    dtype = compute_dtype()
    if dtype is None:
        return model
    from flax import nnx

    for _, module in nnx.iter_modules(model):
        if isinstance(module, (nnx.Linear, nnx.Conv, nnx.ConvTranspose)):
            module.dtype = dtype
    return model
