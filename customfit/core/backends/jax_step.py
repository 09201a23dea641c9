"""JAX: a stateless step. Every variable's value travels in one dict (id -> array) through
keras.StatelessScope, so batch-norm statistics, SeedGenerator states, optimizer slots and
metric totals all come back out of the jitted function (as BayesFlow's JAX approximator does)."""

import warnings

import jax
import keras

from customfit.core.loss_scale import LossScaleOptimizer
from customfit.core.plan import plan_of
from customfit.core.scopes import record_frozen, run_stateless
from customfit.core.step_plan import applied, run_objective, scaled_loss, unpack


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
        plan = plan_of(self)
        data = unpack(data)
        for update in plan.updates:
            if not training:
                values = self._evaluate(plan, update, variables, values, data)
                continue
            for _ in range(update.repeat):
                values = self._update(plan, update, variables, values, data)
        if training and plan.after_step:
            _, values = run_stateless(variables, values, plan.after_step)
        if training:
            _, values = run_stateless(variables, values, plan.count_step)
        logs, _ = run_stateless(variables, values, lambda: plan.logs(training))
        return logs, values

    def _evaluate(self, plan, update, variables, values, data):
        entries, values = run_stateless(
            variables, values, lambda: run_objective(update, data, training=False)
        )
        _, values = run_stateless(variables, values, lambda: plan.record(update, entries, data))
        return values

    def _update(self, plan, update, variables, values, data):
        """One step of one update: its objective's gradient with respect to its own variables,
        taken by jax.value_and_grad through a stateless call, then its optimizer's step."""
        ids = [id(v) for v in update.variables]
        frozen = set()

        def objective_and_scaled_loss():
            entries = run_objective(update, data, training=True)
            return entries, scaled_loss(update, entries["loss"])

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
        if isinstance(update.optimizer, LossScaleOptimizer):
            values = self._apply_loss_scaled(plan, update, grads, frozen, variables, values)
        else:
            _, values = run_stateless(variables, values, lambda: plan.apply(update, grads, frozen))
        _, values = run_stateless(variables, values, lambda: plan.record(update, entries, data))
        return values

    def _apply_loss_scaled(self, plan, update, grads, frozen, variables, values):
        """A LossScaleOptimizer's update, through its stateless_apply as Keras's JAX trainer
        does: its apply() assigns inside ops.cond branches, and under a trace those assignments
        leak the branch's tracers out of the step."""
        optimizer = update.optimizer
        pairs = dict((id(v), g) for g, v in applied(update, grads, frozen))
        if not pairs:
            return values
        built_on = update.built_on
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
            variables, values, lambda: plan.count_skipped(update, before, values[scale])
        )
        return values
