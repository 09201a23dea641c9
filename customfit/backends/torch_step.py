"""PyTorch: autograd.grad per update; nothing accumulates in .grad between updates."""

import keras
import torch

from customfit.scopes import record_frozen


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


class Step(keras.Model):
    def train_step(self, data):
        data = self._unpack(data)
        for plan in self._plans:
            for _ in range(plan.repeat):
                with record_frozen() as frozen_ids:
                    entries = self._run_objective(plan, data, training=True)
                loss = entries["loss"]
                params = [v.value for v in plan.variables]
                if loss.requires_grad and params:
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                else:
                    grads = [None] * len(params)
                with torch.no_grad():
                    self._apply(plan, grads, frozen_ids)
                self._record(plan, {k: v.detach() for k, v in entries.items()}, data)
        self._count_step()
        return self._logs()

    def test_step(self, data):
        data = self._unpack(data)
        for plan in self._plans:
            self._record(plan, self._run_objective(plan, data, training=False), data)
        return self._logs()
