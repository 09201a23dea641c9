"""Stateless scopes that nest: the one mechanism behind cf.ops.grad, cf.frozen and the JAX step.

Keras reads a variable through the innermost StatelessScope and, inside one, records an
assignment instead of performing it. A plain nested StatelessScope forgets its parent's values
(so a JAX step's traced weights would silently turn into the stored ones); ChildScope starts from
its parent's values, remembers which variables were assigned, and lets the caller decide which of
those assignments to pass on.
"""

import contextlib

import keras
from keras.src.backend.common.stateless_scope import get_stateless_scope


class ChildScope(keras.StatelessScope):
    def __init__(self, overrides=()):
        super().__init__(initialize_variables=False)
        parent = get_stateless_scope()
        if parent is not None:
            self.state_mapping = dict(parent.state_mapping)
        for variable, value in overrides:
            self.state_mapping[id(variable)] = value
        self._assigned = {}

    def add_update(self, update):
        variable, _ = update
        self._assigned[id(variable)] = variable
        super().add_update(update)

    def assignments(self):
        """[(variable, new value)] for every variable assigned inside the scope, in order."""
        return [(v, self.state_mapping[id(v)]) for v in self._assigned.values()]


def replay(assignments, skip=frozenset()):
    """Pass assignments on to the enclosing scope, or to the variables themselves."""
    for variable, value in assignments:
        if id(variable) not in skip:
            variable.assign(value)


def run_stateless(variables, values, fn):
    """Call fn() with `variables` reading `values` (id -> tensor); return (result, new values).

    The JAX step threads the whole model state through this: nothing is written to a variable.
    """
    with keras.StatelessScope(state_mapping=[(v, values[id(v)]) for v in variables]) as scope:
        result = fn()
    return result, {id(v): scope.get_current_value(v) for v in variables}


# Which variables were frozen while an objective ran: the steps give those no update at all,
# so a frozen sub-model's optimizer slots stay put too (a zero gradient would still move Adam's).
_frozen_logs = []


@contextlib.contextmanager
def record_frozen():
    log = set()
    _frozen_logs.append(log)
    try:
        yield log
    finally:
        _frozen_logs.remove(log)


def note_frozen(variables):
    for log in _frozen_logs:
        log.update(id(v) for v in variables)
