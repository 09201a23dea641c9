"""Dynamic loss scaling for cf.Model under the mixed_float16 policy, done as Keras does it.

Keras's compile() wraps the optimizer in a keras.optimizers.LossScaleOptimizer; its train steps
multiply the loss by `optimizer.scale_loss` before differentiating, and the wrapper divides the
gradients by the same scale before its inner optimizer applies them, or skips the step (weights
and slots untouched, the scale halved) when a gradient overflowed. cf.Model does the same per
update; with several optimizers each member of the group gets a wrapper, and a scale, of its own.
"""

import keras
from keras import ops as K
from keras.src.losses.loss import scale_loss_for_distribution

LossScaleOptimizer = keras.optimizers.LossScaleOptimizer


def wants_loss_scale(model, auto_scale_loss=True):
    """Whether compile() wraps optimizers: Keras's own rule (float16 compute, loss scaling on)."""
    return bool(auto_scale_loss) and model.dtype_policy.name == "mixed_float16"


def loss_scaled(optimizer, name):
    """`optimizer` inside a LossScaleOptimizer named `name` (as it is, if it already is one)."""
    if isinstance(optimizer, LossScaleOptimizer):
        return optimizer
    return LossScaleOptimizer(optimizer, name=name)


def scale_of(optimizer):
    """The loss scale now, as a tensor of its own (torch assigns variables in place)."""
    return K.copy(K.convert_to_tensor(optimizer.dynamic_scale))


def skipped(scale_before, scale_after):
    """1.0 where the LossScaleOptimizer skipped the step (it halves the scale only then), else
    0.0: what it did, not a test of its own, since under tf.distribute one replica's gradients
    decide for all. Each replica counts its share (1 / replicas): a metric shows their sum."""
    return scale_loss_for_distribution(K.cast(K.less(scale_after, scale_before), "float32"))
