"""One backend's numbers for the comparison: for each update (the objective, or each cf.Update),
every entry of its result with training on and off, and its loss's gradient with respect to each
of the update's variables, computed eagerly from the shared weights and the shared noise. Nothing
is assigned: batch-norm statistics and seed states stay as loaded, so every evaluation starts from
the same state."""

import keras
import numpy as np

from customfit.comparison import noise
from customfit.core.ops import value_and_grad
from customfit.core.plan import plan_of
from customfit.core.scopes import ChildScope
from customfit.core.step_plan import run_objective


def updates_of(model):
    """The updates as the model's built step resolved them (worker.build builds it), so that
    each objective is run as the step runs it: its layers' losses counted, its metrics read."""
    return plan_of(model).updates


def stored(model):
    """(variable, its stored value) for every variable of the model: a scope that maps them all,
    as the steps' scopes do, since Keras's regularizers read a weight through the innermost
    stateless scope and get None for one it does not map."""
    return [(v, v.value) for v in model.variables]


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value), np.float64)


def numbers(model, data, draws):
    """{key: float64 array}: "<update>/training/<entry>", "<update>/inference/<entry>",
    "<update>/gradient/<variable path>"."""
    out = {}
    with noise.shared(draws):
        for update in updates_of(model):
            variables = list(update.submodel.trainable_variables)

            def loss(*params, update=update, variables=variables):
                with ChildScope([*stored(model), *zip(variables, params)]):
                    entries = run_objective(update, data, training=True)
                return entries["loss"], entries

            draws.reset()
            if variables:
                (_, entries), grads = value_and_grad(
                    loss, tuple(range(len(variables))), has_aux=True
                )(*[v.value for v in variables])
            else:  # nothing to differentiate (a sub-model without trainable weights)
                (_, entries), grads = loss(), []
            out.update({f"{update.name}/training/{k}": _numpy(v) for k, v in entries.items()})
            out.update(
                {f"{update.name}/gradient/{v.path}": _numpy(g) for v, g in zip(variables, grads)}
            )
            draws.reset()
            with ChildScope(stored(model)):
                entries = run_objective(update, data, training=False)
            out.update({f"{update.name}/inference/{k}": _numpy(v) for k, v in entries.items()})
    return out
