"""PyTorch: autograd.grad per update; nothing accumulates in .grad between updates."""

import warnings

import keras
import numpy as np
import torch
from keras.src.backend.common.stateless_scope import in_stateless_scope

from customfit.core.plan import plan_of
from customfit.core.scopes import record_frozen
from customfit.core.step_plan import run_objective, scaled_loss, unpack


def value_and_grad(fn, args, argnums):
    outer_needs_graph = torch.is_grad_enabled()
    # evaluate() runs under no_grad; an objective that differentiates (a score, a penalty)
    # still needs its inner gradient there.
    with torch.enable_grad():
        args = list(args)
        for i in argnums:
            a = keras.ops.convert_to_tensor(args[i])
            if not a.requires_grad:
                a = a.detach().requires_grad_(True)
            args[i] = a
        value, aux = fn(*args)
        inputs = [args[i] for i in argnums]
        if value.requires_grad:
            # create_graph so that the train step's own backward pass goes through this gradient.
            grads = torch.autograd.grad(
                value, inputs, create_graph=outer_needs_graph, allow_unused=True
            )
        else:
            grads = [None] * len(inputs)
    grads = [torch.zeros_like(a) if g is None else g for g, a in zip(grads, inputs)]
    if not outer_needs_graph:
        value, grads = value.detach(), [g.detach() for g in grads]
    return value, aux, grads


def _as_tensors(data):
    """The batch with its NumPy arrays made tensors. fit() hands the step tensors already;
    train_on_batch() and test_on_batch() hand it the arrays they got, which an objective's
    arithmetic cannot mix with tensors on torch (as tf.function and jax.jit convert them)."""
    return keras.tree.map_structure(
        lambda t: keras.ops.convert_to_tensor(t) if isinstance(t, np.ndarray) else t, data
    )


def _averaged_over_processes(grads):
    """In a torch.distributed group of several processes (each fitting its share of the global
    batch), every gradient averaged over them, as DistributedDataParallel averages them: in one
    flat buffer (DDP's bucket), one all-reduce. Outside such a group, the gradients as they are."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return grads
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    flat = torch.cat([g.reshape(-1) for g in present]) / dist.get_world_size()
    dist.all_reduce(flat)
    averaged = iter(torch.split(flat, [g.numel() for g in present]))
    return [None if g is None else next(averaged).view_as(g) for g in grads]


class Mean(keras.metrics.Mean):
    """keras.metrics.Mean, with the update cf.Model makes every step (a scalar tensor weighted
    by the batch size) done in place, as Keras's own torch optimizers update their slots.
    Keras's general update (casts, rank checks, broadcasting) costs about 60 us a call here, a
    few percent of a small step; the sums are the same float32 operations."""

    def update_state(self, values, sample_weight=None):
        if not (
            isinstance(values, torch.Tensor)
            and values.ndim == 0
            and isinstance(sample_weight, int)
            and not in_stateless_scope()
        ):
            return super().update_state(values, sample_weight=sample_weight)
        with torch.no_grad():
            total = self.total.value
            total.add_(values.detach().to(total.dtype) * sample_weight)
            self.count.value.add_(sample_weight)

    def result(self):
        if in_stateless_scope():
            return super().result()
        total, count = self.total.value, self.count.value
        # keras.ops.divide_no_nan's torch version, without its dtype resolution
        return torch.where(count == 0, 0.0, total / torch.where(count == 0, 1.0, count))


class Step(keras.Model):
    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if not self._should_torch_compile():
            return self.train_function
        compiled = self.train_function
        eager = {"on": False}

        def train_function(data):
            if not eager["on"]:
                try:
                    return compiled(data)
                except RuntimeError as error:
                    # torch.compile (aot_autograd) cannot take a gradient of a gradient; an
                    # objective with a gradient inside (a penalty, a score) runs eagerly instead.
                    if "double backward" not in str(error):
                        raise
                    warnings.warn(
                        "torch.compile cannot differentiate twice (this objective takes a "
                        "gradient inside); its train step runs eagerly on the torch backend",
                        stacklevel=2,
                    )
                    eager["on"] = True
            return self.train_step(data[0])

        self.train_function = train_function
        return self.train_function

    def train_step(self, data):
        plan = plan_of(self)
        data = unpack(_as_tensors(data))
        for update in plan.updates:
            for _ in range(update.repeat):
                with record_frozen() as frozen_ids:
                    entries = run_objective(update, data, training=True)
                loss = scaled_loss(update, entries["loss"])
                params = [v.value for v in update.variables]
                if loss.requires_grad and params:
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                else:
                    grads = [None] * len(params)
                grads = _averaged_over_processes(grads)
                with torch.no_grad():
                    plan.apply(update, grads, frozen_ids)
                plan.record(update, {k: v.detach() for k, v in entries.items()}, data)
        if plan.after_step:
            with torch.no_grad():
                plan.after_step()
        plan.count_step()
        return plan.logs()

    def test_step(self, data):
        return plan_of(self).stateful_test_step(_as_tensors(data))
