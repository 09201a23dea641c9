"""JAX: a stateless step. Every variable's value travels in one dict (id -> array) through
keras.StatelessScope, so batch-norm statistics, SeedGenerator states, optimizer slots and
metric totals all come back out of the jitted function (as BayesFlow's JAX approximator does)."""

import jax
import keras

from customfit.scopes import record_frozen, run_stateless


def value_and_grad(fn, args, argnums):
    (value, aux), grads = jax.value_and_grad(fn, argnums=argnums, has_aux=True)(*args)
    return value, aux, list(grads)


class Step(keras.Model):
    def train_step(self, state, data):
        groups = (
            self.trainable_variables,
            self.non_trainable_variables,
            self.optimizer.variables,
            self.metrics_variables,
        )
        logs, values = self._stateless_step(groups, state, data, training=True)
        return logs, tuple([values[id(v)] for v in group] for group in groups)

    def test_step(self, state, data):
        groups = (self.trainable_variables, self.non_trainable_variables, self.metrics_variables)
        logs, values = self._stateless_step(groups, state, data, training=False)
        return logs, tuple([values[id(v)] for v in group] for group in groups)

    def _stateless_step(self, groups, state, data, training):
        variables = [v for group in groups for v in group]
        values = {id(v): x for group, xs in zip(groups, state) for v, x in zip(group, xs)}
        data = self._unpack(data)
        for plan in self._plans:
            if not training:
                entries, values = run_stateless(
                    variables, values, lambda: self._run_objective(plan, data, training=False)
                )
                _, values = run_stateless(variables, values, lambda: self._record(plan, entries, data))
                continue
            ids = [id(v) for v in plan.variables]
            for _ in range(plan.repeat):
                frozen = set()

                def loss_fn(params, values):
                    values = {**values, **dict(zip(ids, params))}
                    with record_frozen() as log:
                        entries, values = run_stateless(
                            variables, values, lambda: self._run_objective(plan, data, training=True)
                        )
                    frozen.update(log)
                    return entries["loss"], (entries, values)

                (_, (entries, values)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    [values[i] for i in ids], values
                )
                _, values = run_stateless(
                    variables, values, lambda: self._apply(plan, grads, frozen)
                )
                _, values = run_stateless(variables, values, lambda: self._record(plan, entries, data))
        if training:
            _, values = run_stateless(variables, values, self._count_step)
        logs, _ = run_stateless(variables, values, self._logs)
        return logs, values
