"""JAX: a stateless step. Every variable's value travels in one dict (id -> array) through
keras.StatelessScope, so batch-norm statistics, SeedGenerator states, optimizer slots and
metric totals all come back out of the jitted function (as BayesFlow's JAX approximator does)."""

import warnings

import jax
import keras

from customfit.core.loss_scale import LossScaleOptimizer
from customfit.core.scopes import record_frozen, run_stateless


def value_and_grad(fn, args, argnums):
    (value, aux), grads = jax.value_and_grad(fn, argnums=argnums, has_aux=True)(*args)
    return value, aux, list(grads)


Mean = keras.metrics.Mean


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
                values = self._evaluate(plan, variables, values, data)
                continue
            for _ in range(plan.repeat):
                values = self._update(plan, variables, values, data)
        if training:
            _, values = run_stateless(variables, values, self._count_step)
        logs, _ = run_stateless(variables, values, lambda: self._logs(training))
        return logs, values

    def _evaluate(self, plan, variables, values, data):
        entries, values = run_stateless(
            variables, values, lambda: self._run_objective(plan, data, training=False)
        )
        _, values = run_stateless(variables, values, lambda: self._record(plan, entries, data))
        return values

    def _update(self, plan, variables, values, data):
        """One step of one update: its objective's gradient with respect to its own variables,
        taken by jax.value_and_grad through a stateless call, then its optimizer's step."""
        ids = [id(v) for v in plan.variables]
        frozen = set()

        def objective_and_scaled_loss():
            entries = self._run_objective(plan, data, training=True)
            return entries, self._scaled_loss(plan, entries["loss"])

        def loss_fn(params, values):
            values = {**values, **dict(zip(ids, params))}
            with record_frozen() as log:
                (entries, loss), values = run_stateless(
                    variables, values, objective_and_scaled_loss
                )
            frozen.update(log)
            return loss, (entries, values)

        (_, (entries, values)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            [values[i] for i in ids], values
        )
        if isinstance(plan.optimizer, LossScaleOptimizer):
            values = self._apply_loss_scaled(plan, grads, frozen, variables, values)
        else:
            _, values = run_stateless(variables, values, lambda: self._apply(plan, grads, frozen))
        _, values = run_stateless(variables, values, lambda: self._record(plan, entries, data))
        return values

    def _apply_loss_scaled(self, plan, grads, frozen, variables, values):
        """A LossScaleOptimizer's update, through its stateless_apply as Keras's JAX trainer
        does: its apply() assigns inside ops.cond branches, and under a trace those assignments
        leak the branch's tracers out of the step."""
        optimizer = plan.optimizer
        pairs = dict((id(v), g) for g, v in self._applied(plan, grads, frozen))
        if not pairs:
            return values
        built_on = optimizer._trainable_variables
        with warnings.catch_warnings():
            # Variables of other updates and frozen ones have no gradient here, on purpose.
            warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
            new_variables, new_slots = optimizer.stateless_apply(
                [values[id(v)] for v in optimizer.variables],
                [pairs.get(id(v)) for v in built_on],
                [values[id(v)] for v in built_on],
            )
        scale = id(optimizer.dynamic_scale)
        before = values[scale]
        values = {
            **values,
            **{id(v): x for v, x in zip(built_on, new_variables)},
            **{id(v): x for v, x in zip(optimizer.variables, new_slots)},
        }
        _, values = run_stateless(
            variables, values, lambda: self._count_skipped(plan, before, values[scale])
        )
        return values
