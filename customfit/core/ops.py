"""Gradients, divergences and freezing that work on every Keras backend, nestable, inside
an objective and inside a compiled train step.

`grad(f)(x)` differentiates a scalar function of tensors. Any Keras state that f updates
(batch-norm statistics, SeedGenerator states) is carried out of the differentiated function and
applied where f was called, so a JAX trace never leaks and TensorFlow/PyTorch see the same effect.
"""

import contextlib

import keras
from keras import ops as K

from customfit.core.backends import backend_module
from customfit.core.scopes import ChildScope, note_frozen, replay

__all__ = ["grad", "value_and_grad", "divergence", "frozen"]


def _argnums_tuple(argnums):
    if isinstance(argnums, int):
        return (argnums,), True
    argnums = tuple(argnums)
    if not argnums or not all(isinstance(i, int) for i in argnums):
        raise ValueError(f"argnums must be an int or a non-empty tuple of ints; got {argnums!r}")
    return argnums, False


def value_and_grad(f, argnums=0, has_aux=False):
    """The value of a scalar function and its gradient, on every Keras backend (jax.value_and_grad).

    Usable inside an objective and inside a compiled step, and nestable: the training step can
    differentiate the result again (a gradient penalty, forces from an energy). Keras state that
    `f` updates (batch-norm statistics, SeedGenerator states) is applied where `g` is called.

    Args:
        f: a function of tensors returning a scalar tensor (with `has_aux`, a pair
            `(scalar, aux)`).
        argnums: which positional argument(s) to differentiate: an int or a tuple of ints.
        has_aux: whether `f` returns `(scalar, aux)`; aux is passed through undifferentiated.

    Returns:
        A function `g(*args)` returning `(value, grads)`, or `((value, aux), grads)` with
        `has_aux`; grads is one tensor for an int `argnums`, a tuple for a tuple.

    Example:
        ```python
        value, slope = cf.ops.value_and_grad(lambda x: ops.sum(x**3))(ops.ones((2,)))
        # value 2.0, slope [3.0, 3.0]
        ```
    """
    nums, single = _argnums_tuple(argnums)
    step = backend_module()

    def wrapped(*args):
        for i in nums:
            if i >= len(args):
                raise ValueError(
                    f"argnums {argnums!r} asks for argument {i}; f was given {len(args)}"
                )
        assigned = []

        def scalar_with_state(*inner_args):
            with ChildScope() as scope:
                out = f(*inner_args)
            value, aux = out if has_aux else (out, None)
            value = K.convert_to_tensor(value)
            if len(K.shape(value)) != 0:
                raise ValueError(
                    f"cf.ops.grad needs f to return a scalar; got shape {tuple(K.shape(value))}"
                )
            pairs = scope.assignments()
            assigned[:] = [v for v, _ in pairs]
            return value, (aux, [new for _, new in pairs])

        value, (aux, new_values), grads = step.value_and_grad(scalar_with_state, args, nums)
        replay(zip(assigned, new_values))
        grads = grads[0] if single else tuple(grads)
        return ((value, aux) if has_aux else value), grads

    return wrapped


def grad(f, argnums=0, has_aux=False):
    """The gradient of a scalar function, on every Keras backend (like jax.grad).

    Usable inside an objective and inside a compiled step, and nestable (see `value_and_grad`).

    Args:
        f: a function of tensors returning a scalar tensor (with `has_aux`, `(scalar, aux)`).
        argnums: which positional argument(s) to differentiate: an int or a tuple of ints.
        has_aux: whether `f` returns `(scalar, aux)`.

    Returns:
        A function `g(*args)` returning the gradient with respect to `args[argnums]` (a tuple of
        gradients for a tuple `argnums`; `(grads, aux)` with `has_aux`).

    Example:
        ```python
        # inside an objective: a WGAN-GP gradient penalty
        slopes = cf.ops.grad(lambda v: ops.sum(self.critic(v)))(between)
        penalty = ops.mean((ops.sqrt(ops.sum(slopes**2, axis=1)) - 1.0) ** 2)
        ```
    """
    vg = value_and_grad(f, argnums=argnums, has_aux=has_aux)

    def wrapped(*args):
        (value_or_pair), grads = vg(*args)
        return (grads, value_or_pair[1]) if has_aux else grads

    return wrapped


def divergence(f, x, method="exact", seed=None):
    """The per-sample divergence sum_i d f_i / d x_i of a map f: (B, D) -> (B, D).

    Args:
        f: a function of a (B, D) tensor returning a (B, D) tensor, each row depending on its
            own input row only (a network applied per sample).
        x: the (B, D) points.
        method: "exact" takes D gradients (right for small D); "hutchinson" takes one, with a
            random sign probe v (the estimate v . d(f . v)/dx, unbiased).
        seed: for "hutchinson": an int or a `keras.random.SeedGenerator` (inside a compiled
            step, a SeedGenerator made in the model's `__init__`).

    Returns:
        A tensor of shape (B,).

    Raises:
        ValueError: for another method, an x that is not 2-D, or an f that changes the shape.

    Example:
        ```python
        # score matching: E[|s(x)|^2 / 2 + div s(x)]
        div = cf.ops.divergence(self.net, x, method="hutchinson", seed=self.probe)
        loss = ops.mean(0.5 * ops.sum(self.net(x) ** 2, axis=1) + div)
        ```
    """
    if method not in ("exact", "hutchinson"):
        raise ValueError(f"divergence method must be 'exact' or 'hutchinson'; got {method!r}")
    x = K.convert_to_tensor(x)
    shape = tuple(K.shape(x))
    if len(shape) != 2:
        raise ValueError(f"divergence needs x of shape (B, D); got shape {shape}")

    def static(t):
        # Inside a TensorFlow graph a partial last batch has a dynamic batch size (a tensor in
        # K.shape), which cannot be compared as a Python bool: compare what is known statically.
        return tuple(d if isinstance(d, int) else None for d in K.shape(t))

    def checked(x_):
        y = f(x_)
        if static(y) != static(x):
            raise ValueError(
                f"divergence needs f to map shape {shape} to the same shape; got {tuple(K.shape(y))}"
            )
        return y

    if method == "hutchinson":
        probe = K.cast(keras.random.randint(shape, 0, 2, seed=seed), x.dtype) * 2.0 - 1.0
        vjp = grad(lambda x_: K.sum(checked(x_) * probe))(x)
        return K.sum(vjp * probe, axis=1)

    total = 0.0
    for i in range(shape[1]):
        row = grad(lambda x_, i=i: K.sum(checked(x_)[:, i]))(x)
        total = total + row[:, i]
    return total


def _is_seed_state(variable):
    # A frozen layer's dropout should still draw fresh masks: its seed is not a learned state.
    return "seed_generator_state" in variable.name


@contextlib.contextmanager
def frozen(layer):
    """A context manager: inside it, `layer`'s variables get no gradient and no update.

    Its weights and its batch-norm statistics stay as they were, while gradients still flow
    *through* the layer to its inputs (a generator trained through a frozen discriminator, an
    input perturbation through a frozen classifier). Unlike `layer.trainable = False` it holds
    only inside the block, and it works inside a compiled step on every backend.

    Args:
        layer: a Keras layer or model (a part of the cf.Model being trained).

    Returns:
        The layer, for `with cf.frozen(layer) as frozen_layer:`.

    Raises:
        ValueError: if `layer` is not a Keras layer or model.

    Example:
        ```python
        with cf.frozen(self.classifier):
            logits = self.classifier(ops.clip(x + self.delta, 0.0, 1.0))
        ```
    """
    if not hasattr(layer, "variables"):
        raise ValueError(f"frozen() needs a Keras layer or model; got {type(layer).__name__}")
    held = [v for v in layer.variables if not _is_seed_state(v)]
    note_frozen(held)
    held_ids = {id(v) for v in held}
    with ChildScope([(v, K.stop_gradient(v.value)) for v in held]) as scope:
        yield layer
    replay(scope.assignments(), skip=held_ids)
