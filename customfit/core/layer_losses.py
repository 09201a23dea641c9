"""The losses that layers add (kernel regularizers, `add_loss`), counted as stock Keras counts them.

A model compiled with `compile(loss=...)` minimizes its loss plus `model.losses`. A cf.Model's
update minimizes its objective plus the losses of the layers it trains (`submodel.losses`),
unless the objective reads some layer's `.losses` itself (keras-io's vq_vae writes
`reconstruction + sum(self.vqvae.losses)`): then it has taken charge of them and nothing is added
a second time. Which of the two an objective does is seen once, when the step is built.

Keras keeps a loss a layer adds inside a stateless scope only where that scope collects losses;
the JAX step and the symbolic build run the objective in scopes that do not, which dropped
`add_loss` there (and left `self.losses` empty). `collecting()` runs it in one that does.
"""

import contextlib

import keras
from keras import ops as K
from keras.src.backend.common.stateless_scope import get_stateless_scope

from customfit.core.scopes import ChildScope, replay


@contextlib.contextmanager
def collecting():
    """Layers' `add_loss` kept while the objective runs, whatever scope it runs in."""
    parent = get_stateless_scope()
    if parent is None or parent.collect_losses:
        yield  # eager or a tf.function: each layer keeps its own; or already collected
        return
    with ChildScope() as scope:
        scope.collect_losses = True
        yield
    replay(scope.assignments())


@contextlib.contextmanager
def reads_noted():
    """Note whether any layer's `.losses` is read inside the block: yields a list that holds
    True once one is. Used only while the step is built (a symbolic run of each objective):
    Keras offers no hook on reading a layer's losses, so its property is wrapped for the while."""
    layer_class = keras.layers.Layer
    original = layer_class.losses
    read = []

    def noted(layer):
        read[:] = [True]
        return original.fget(layer)

    layer_class.losses = property(noted, doc=original.__doc__)
    try:
        yield read
    finally:
        layer_class.losses = original


def added(loss, submodel):
    """`loss` plus the losses `submodel`'s layers added in this call and its regularizers."""
    extra = submodel.losses
    if not extra:
        return loss
    return loss + K.sum(K.stack([K.cast(x, loss.dtype) for x in extra]))
