"""Targeted attacks in JAX with Flax NNX: jax.value_and_grad of a function of the input, under
@nnx.jit.

The idiom: differentiation is a transformation of a function, so the objective is written as a
function of the perturbation alone (the model is closed over, hence held fixed), and
jax.value_and_grad of it is the input gradient. The whole attack step is one jitted function; the
model's weights travel into it as nnx.jit's graph state, so new weights need no retrace. The
rules are in rules.py; the classifier and its plumbing are classifier/with_flax.py's and
customfit/trainers/flax_trainer.py's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from customfit.tasks.adversarial import rules
from customfit.tasks.classifier import with_flax as classifier

# Pairs per forward/backward pass. XLA on CPU runs small batches faster per pair: a 3240-pair
# attack step took 1.2-1.6 s in batches of 64 or 128, 2.1-2.5 s in batches of 1024 or more.
BATCH_SIZE = 128


# --8<-- [start:objective]
def objective(model, x, dx, target, method):
    # A sum over pairs: each pair's gradient is its own, whatever else shares the batch.
    value = optax.softmax_cross_entropy_with_integer_labels(model(x + dx), target).sum()
    if method == "lecture":
        # jnp.abs's gradient at 0 is 1 (TF and torch take 0): at dx = 0, where the attack starts
        # and where clipping parks pixels, that would push every pixel down. dx * sign(dx) with
        # the sign held constant is |dx| with gradient sign(dx), 0 at 0, as rules.py asks.
        absolute = dx * jax.lax.stop_gradient(jnp.sign(dx))
        value += rules.LECTURE_C * absolute.mean(axis=(1, 2, 3)).sum()
    return value


# --8<-- [end:objective]


@nnx.jit(static_argnames="method")
def objective_and_grad(model, x, dx, target, method):
    return jax.value_and_grad(lambda dx: objective(model, x, dx, target, method))(dx)


# --8<-- [start:step]
@nnx.jit(static_argnames="method")
def attack_step(model, x, dx, target, method, size, eps):
    grad = jax.grad(lambda dx: objective(model, x, dx, target, method))(dx)
    if method == "pgd":
        dx = jnp.clip(dx - size * jnp.sign(grad), -eps, eps)
    else:
        dx = dx - size * grad
    return jnp.clip(x + dx, 0.0, 1.0) - x


# --8<-- [end:step]


# --8<-- [start:model]
class Trainer(classifier.Trainer):
    """The classifier of classifier/with_flax.py (the model under attack), plus the attack on
    its current weights."""

    # --8<-- [end:model]

    # --8<-- [start:step]
    def attack(self, x, target, *, method, eps, steps, batch_size=None):
        rules.check(method, eps, steps)
        size = rules.pgd_step_size(eps, steps) if method == "pgd" else rules.LECTURE_STEP
        x, target = np.asarray(x, np.float32), classifier.labels(target)
        return rules.attack_in_batches(
            x,
            target,
            steps=steps,
            batch_size=batch_size or BATCH_SIZE,
            step=lambda x, dx, target: attack_step(self.model, x, dx, target, method, size, eps),
            to_tensor=jnp.asarray,
            zeros_like=jnp.zeros_like,
            to_numpy=np.asarray,
        )

    # --8<-- [end:step]

    def attack_objective_and_grad(self, x, dx, target, *, method):
        """The parity hook: the batch objective (a sum over pairs) and its gradient w.r.t. dx."""
        rules.check(method, 1.0, 1)
        value, grad = objective_and_grad(
            self.model,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(dx, jnp.float32),
            jnp.asarray(classifier.labels(target)),
            method,
        )
        return float(value), np.asarray(grad)
