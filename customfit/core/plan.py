"""The plan of a cf.Model's step: its updates resolved (objective, sub-model, optimizer,
variables) and the names their objectives' entries are logged under."""

from dataclasses import dataclass, field

from customfit.core.optimizer_group import OptimizerGroup
from customfit.core.update import Update


@dataclass
class Plan:
    """One update, resolved: which objective, which optimizer, which variables, which metrics."""

    name: str
    objective: object
    # Here, not in a list attribute of the model: Keras's saving walk follows a model's list
    # attributes, and one holding the model itself sent load_weights into endless recursion.
    submodel: object
    optimizer: object
    variables: list
    repeat: int
    metric_names: dict = field(default_factory=dict)  # objective's key -> logged name
    skip_name: str = None  # the logged count of steps its LossScaleOptimizer skipped


def resolve_updates(model):
    if getattr(model, "optimizer", None) is None:
        raise ValueError(f"{type(model).__name__} must be compiled before fit()/evaluate()")
    group = model.optimizer if isinstance(model.optimizer, OptimizerGroup) else None
    updates = model.updates()
    if updates is None:
        if group is not None:
            raise ValueError(
                f"compile() got several optimizers ({', '.join(group.members)}); define "
                "updates() to say which objective and sub-model each one trains"
            )
        updates = [Update("loss", model.objective, model)]
    updates = list(updates)
    if not updates or not all(isinstance(u, Update) for u in updates):
        raise ValueError(f"updates() must return a non-empty list of cf.Update; got {updates!r}")
    layers = {id(layer) for layer in model._flatten_layers(include_self=True)}
    plans = []
    for u in updates:
        if group is not None and u.name not in group.members:
            raise ValueError(
                f"updates() names optimizer {u.name!r}, but compile() got "
                f"{', '.join(repr(n) for n in group.members)}"
            )
        if id(u.submodel) not in layers:
            raise ValueError(
                f"Update {u.name!r}: its sub-model {getattr(u.submodel, 'name', u.submodel)!r} "
                f"is not part of {model.name!r}; expected one of its layers or the model itself"
            )
        optimizer = group.members[u.name] if group is not None else model.optimizer
        plans.append(Plan(u.name, u.objective, u.submodel, optimizer, [], u.repeat))
    return plans


def metric_names(plan, keys, others, n_plans):
    """The objective's keys as logged: a lone default update logs them as they are; with
    several updates, "loss" becomes "<name>_loss" and a key two updates share is prefixed."""
    if n_plans == 1 and plan.name == "loss":
        return {key: key for key in keys}
    return {key: f"{plan.name}_{key}" if key == "loss" or key in others else key for key in keys}


def build_optimizers(model, plans):
    variables_of = {}
    for plan in plans:
        plan.variables = list(plan.submodel.trainable_variables)
        known = variables_of.setdefault(id(plan.optimizer), (plan.optimizer, {}))[1]
        known.update({id(v): v for v in plan.variables})
    for optimizer, known in variables_of.values():
        if not optimizer.built:
            optimizer.build(list(known.values()))
    if isinstance(model.optimizer, OptimizerGroup) and not model.optimizer.built:
        model.optimizer.build([])
