"""Dynamic loss scaling for cf.Model under the mixed_float16 policy, done as Keras does it.

Keras's compile() wraps the optimizer in a keras.optimizers.LossScaleOptimizer; its train steps
multiply the loss by `optimizer.scale_loss` before differentiating, and the wrapper divides the
gradients by the same scale before its inner optimizer applies them, or skips the step (weights
and slots untouched, the scale halved) when a gradient overflowed. cf.Model does the same per
update; with several optimizers each member of the group gets a wrapper, and a scale, of its own.
"""

import keras
from keras import ops as K

LossScaleOptimizer = keras.optimizers.LossScaleOptimizer


def wants_loss_scale(model, auto_scale_loss=True):
    """Whether compile() wraps optimizers: Keras's own rule (float16 compute, loss scaling on)."""
    return bool(auto_scale_loss) and model.dtype_policy.name == "mixed_float16"


def loss_scaled(optimizer, name):
    """`optimizer` inside a LossScaleOptimizer named `name` (as it is, if it already is one)."""
    if isinstance(optimizer, LossScaleOptimizer):
        return optimizer
    return LossScaleOptimizer(optimizer, name=name)


def skipped(optimizer, grads):
    """1.0 where a LossScaleOptimizer skips the step these (scaled) gradients make, else 0.0:
    its own test, any gradient not finite."""
    grads = [g for g in grads if g is not None]
    if not grads:
        return K.zeros((), "float32")
    return 1.0 - K.cast(optimizer.check_finite(grads), "float32")
