"""Targeted attacks in TensorFlow: tf.GradientTape watching the input, inside a tf.function.

The idiom: the perturbation is a plain tensor, so the tape must be told to watch it
(tape.watch); the tape is also told not to watch the weights it reads, since only the gradient
with respect to the input is wanted. One attack step (objective, gradient, update, projection) is
one traced graph. The rules are in rules.py. The model is the classifier of
customfit/tasks/classifier/with_tensorflow.py; its plumbing is in customfit/trainers/.
"""

import numpy as np
import tensorflow as tf

from customfit.tasks.adversarial import rules
from customfit.tasks.classifier import with_tensorflow as classifier

# Pairs per forward/backward pass, for the whole 3240-pair attack on 2 CPU cores: 128 to 3240
# measured alike within the noise of a shared machine.
BATCH_SIZE = 1024


# --8<-- [start:model]
class Trainer(classifier.Trainer):
    """The classifier of with_tensorflow.py, plus the attack on its current weights."""

    # --8<-- [end:model]

    # --8<-- [start:objective]
    def _objective(self, x, dx, target, method):
        logits = self.model(x + dx, training=False)
        # A sum over pairs: each pair's gradient is its own, whatever else shares the batch.
        value = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        )
        if method == "lecture":
            # tf.abs's gradient at 0 is 0, the subgradient rules.py asks for.
            value += rules.LECTURE_C * tf.reduce_sum(tf.reduce_mean(tf.abs(dx), axis=[1, 2, 3]))
        return value

    # --8<-- [end:objective]

    # --8<-- [start:step]
    def _objective_and_grad(self, x, dx, target, method):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(dx)
            value = self._objective(x, dx, target, method)
        return value, tape.gradient(value, dx)

    # `method` is a Python string: one trace per method. The step sizes are tensors, so another
    # eps does not trace again.
    @tf.function(reduce_retracing=True)
    def _attack_step(self, x, dx, target, method, size, eps):
        _, grad = self._objective_and_grad(x, dx, target, method)
        if method == "pgd":
            dx = tf.clip_by_value(dx - size * tf.sign(grad), -eps, eps)
        else:
            dx = dx - size * grad
        return tf.clip_by_value(x + dx, 0.0, 1.0) - x

    @tf.function(reduce_retracing=True)
    def _traced_objective_and_grad(self, x, dx, target, method):
        return self._objective_and_grad(x, dx, target, method)

    def attack(self, x, target, *, method, eps, steps, batch_size=None):
        rules.check(method, eps, steps)
        size = rules.pgd_step_size(eps, steps) if method == "pgd" else rules.LECTURE_STEP
        # eps bounds pgd only; the lecture's method ignores it (it may be None there).
        bound = tf.constant(eps if method == "pgd" else 0.0, tf.float32)
        size = tf.constant(size, tf.float32)
        pairs = tf.data.Dataset.from_tensor_slices(
            (np.asarray(x, np.float32), np.asarray(target, np.int64))
        ).batch(batch_size or BATCH_SIZE)
        chunks = []
        for x_batch, target_batch in pairs:
            dx = tf.zeros_like(x_batch)
            for _ in range(steps):
                dx = self._attack_step(x_batch, dx, target_batch, method, size, bound)
            chunks.append((x_batch + dx).numpy())
        return np.concatenate(chunks)

    # --8<-- [end:step]

    def attack_objective_and_grad(self, x, dx, target, *, method):
        """The parity hook: the batch objective (a sum over pairs) and its gradient w.r.t. dx."""
        rules.check(method, 1.0, 1)
        value, grad = self._traced_objective_and_grad(
            tf.constant(x, tf.float32),
            tf.constant(dx, tf.float32),
            tf.constant(target, tf.int64),
            method,
        )
        return float(value), grad.numpy()
