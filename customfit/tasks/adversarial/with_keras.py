"""Targeted attacks with customfit's public API, on whichever Keras backend this process runs
(the keras-tensorflow, keras-torch and keras-jax engines).

The objective is written once with keras.ops, and cf.ops.grad differentiates it with respect to
the perturbation: no tape, no autograd, no jax.grad in sight. Only how a step is compiled depends
on the backend (_compile below): jax.jit with the weights passed in through a
keras.StatelessScope, as customfit's own JAX train step does; tf.function on TensorFlow; on torch,
eager under torch.no_grad(), so that no graph is kept beyond the one gradient asked for.
Compare with_tensorflow.py, with_torch.py and with_flax.py: the same rules (rules.py), there in
each framework's own idiom.
"""

import keras
import numpy as np
from keras import ops as K

import customfit as cf
from customfit.tasks.adversarial import rules
from customfit.tasks.classifier import with_keras as classifier
from customfit.trainers.keras_trainer import tensor, to_numpy

# Pairs per forward/backward pass, for the whole 3240-pair attack on 2 CPU cores. XLA on CPU runs
# small batches faster per pair (1.2-1.6 s a step in batches of 128, 2.1 s in 1024s); TensorFlow
# and torch measured 512 and 1024 alike, and all 3240 at once slower.
BATCH_SIZE = 128 if keras.backend.backend() == "jax" else 1024


def absolute(dx):
    # K.abs's gradient at 0 is 1 on JAX (0 on TensorFlow and torch). dx * sign(dx) with the sign
    # held constant is |dx| with gradient sign(dx), 0 at 0 on every backend, as rules.py asks.
    return dx * K.stop_gradient(K.sign(dx))


# --8<-- [start:model]
class Trainer(classifier.Trainer):
    """The classifier of with_keras.py, plus the attack on its current weights."""

    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        # devices: the classifier's build_trainer passes it; adversarial runs on one device.
        super().__init__(layers, input_shape, num_classes, lr, seed, devices=devices)
        self._attack_step = _compile(self._step, self.model.network.variables)
        self._value_and_grad = _compile(self._objective_and_grad, self.model.network.variables)

    # --8<-- [end:model]

    # --8<-- [start:objective]
    def _objective(self, method, x, dx, target):
        logits = self.model(x + dx, training=False)
        # A sum over pairs: each pair's gradient is its own, whatever else shares the batch.
        value = K.sum(
            keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
        )
        if method == "lecture":
            value = value + rules.LECTURE_C * K.sum(K.mean(absolute(dx), axis=(1, 2, 3)))
        return value

    # --8<-- [end:objective]

    def _objective_and_grad(self, method, x, dx, target):
        return cf.ops.value_and_grad(lambda dx: self._objective(method, x, dx, target))(dx)

    # --8<-- [start:step]
    def _step(self, method, x, dx, target, size, eps):
        grad = cf.ops.grad(lambda dx: self._objective(method, x, dx, target))(dx)
        if method == "pgd":
            dx = K.clip(dx - size * K.sign(grad), -eps, eps)
        else:
            dx = dx - size * grad
        return K.clip(x + dx, 0.0, 1.0) - x

    def attack(self, x, target, *, method, eps, steps, batch_size=None):
        rules.check(method, eps, steps)
        size = rules.pgd_step_size(eps, steps) if method == "pgd" else rules.LECTURE_STEP
        # Tensors, not Python floats: another eps must not compile another step.
        size = K.convert_to_tensor(size, "float32")
        bound = K.convert_to_tensor(eps if method == "pgd" else 0.0, "float32")
        x, target = np.asarray(x, np.float32), np.asarray(target, np.int64)
        return rules.attack_in_batches(
            x,
            target,
            steps=steps,
            batch_size=batch_size or BATCH_SIZE,
            step=lambda x, dx, target: self._attack_step(method, x, dx, target, size, bound),
            to_tensor=K.convert_to_tensor,
            zeros_like=K.zeros_like,
            to_numpy=K.convert_to_numpy,
        )

    # --8<-- [end:step]

    def attack_objective_and_grad(self, x, dx, target, *, method):
        """The parity hook: the batch objective (a sum over pairs) and its gradient w.r.t. dx."""
        rules.check(method, 1.0, 1)
        value, grad = self._value_and_grad(method, tensor(x), tensor(dx), tensor(target, "int64"))
        return float(to_numpy(value)), to_numpy(grad)


def _compile(function, variables):
    """function(method, *tensors), compiled the way this backend compiles, one program per
    method. The backend's framework is imported here only: the objective above needs none."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        # A jitted function must not read the model's variables (they would be baked in as
        # constants): their values come in as an argument and are mapped onto the variables.
        def stateless(values, method, *tensors):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(method, *tensors)

        jitted = jax.jit(stateless, static_argnums=1)
        return lambda method, *tensors: jitted([v.value for v in variables], method, *tensors)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if backend == "torch":
        import torch

        # cf.ops.grad switches gradients on for the one gradient it takes; outside it, nothing
        # needs a graph (and with one, torch would keep a differentiable gradient).
        return torch.no_grad()(function)
    raise RuntimeError(f"no attack step for the Keras backend {backend!r}")
