"""The plan of a cf.Model's step, made once from one batch: its updates resolved (objective,
sub-model, optimizer, variables), the names their objectives' entries are logged under, their
metric trackers and their optimizers built."""

import contextlib
from dataclasses import dataclass, field

import keras
from keras import tree
from keras.src.backend import compute_output_spec

from customfit.core import loss_scale
from customfit.core.backends import backend_module
from customfit.core.data_spec import keep_spec
from customfit.core.layers import all_layers
from customfit.core.optimizer_group import OptimizerGroup
from customfit.core.step_plan import StepPlan, run_objective, unpack
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
    # The variables its optimizer was built on, in that order (the union of the variables of
    # the updates sharing that optimizer): what a stateless_apply takes.
    built_on: list = field(default_factory=list)


def plan_of(model):
    """The model's StepPlan, or None before its step is built (or after compile())."""
    return getattr(model, "_cf_plan", None)


def forget_plan(model):
    object.__setattr__(model, "_cf_plan", None)


def build(model, data_batch):
    """Resolve the updates of a compiled cf.Model against one batch (only its shapes and dtypes
    are read): find each objective's entries, make their trackers, build the optimizers."""
    spec = tree.map_structure(
        lambda v: (
            None
            if v is None
            else keras.KerasTensor(v.shape, keras.backend.standardize_dtype(v.dtype))
        ),
        data_batch,
    )
    plans = resolve_updates(model)
    keep_spec(model, spec)
    keys = [
        list(
            compute_output_spec(
                lambda d, plan=plan: run_objective(plan, d, training=True),
                unpack(spec),
            )
        )
        for plan in plans
    ]
    for plan, own in zip(plans, keys):
        others = {k for other in keys if other is not own for k in other}
        plan.metric_names = metric_names(plan, own, others, len(plans))
        if isinstance(plan.optimizer, loss_scale.LossScaleOptimizer):
            alone = len(plans) == 1 and plan.name == "loss"
            plan.skip_name = "skipped_steps" if alone else f"{plan.name}_skipped_steps"
    logged = [n for p in plans for n in p.metric_names.values()]
    counted = [p.skip_name for p in plans if p.skip_name]
    trackers = make_trackers(model, logged, counted)
    build_optimizers(model, plans)
    model.built = True
    step_plan = StepPlan(
        plans,
        trackers,
        list(dict.fromkeys(logged)),
        list(dict.fromkeys(counted)),
        model.optimizer,
    )
    object.__setattr__(model, "_cf_plan", step_plan)
    return step_plan


def make_trackers(model, names, counters=()):
    """A Mean per objective entry; a Sum per counter (skipped steps: an epoch's count, logged by
    fit() only). Kept across compile() calls: a name is tracked once."""
    trackers = getattr(model, "_cf_trackers", None) or {}
    mean = backend_module().Mean
    kinds = {**{n: mean for n in names}, **{n: keras.metrics.Sum for n in counters}}
    missing = [n for n in kinds if n not in trackers]
    if missing:
        with _state_unlocked(model) as store:
            for name in missing:
                tracker = kinds[name](name=name)
                store.add_to_store("metrics", tracker)
                trackers[name] = tracker
    object.__setattr__(model, "_cf_trackers", trackers)
    return trackers


@contextlib.contextmanager
def _state_unlocked(model):
    # Keras locks a built model's state, and offers no public way to add a metric to a built
    # model; the trackers must exist before the step is traced. Keras's own tracker, unlocked
    # for the while, and locked again as Keras locks it.
    was_locked = model._tracker.locked
    model._tracker.unlock()
    try:
        yield model._tracker
    finally:
        if was_locked:
            model._lock_state()


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
    layers = {id(layer) for layer in all_layers(model)}
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
    """Each optimizer built on the variables of the updates it makes, each variable once; an
    OptimizerGroup told which variables each member holds (for its EMA at the end of fit())."""
    variables_of = {}
    for plan in plans:
        plan.variables = list(plan.submodel.trainable_variables)
        known = variables_of.setdefault(id(plan.optimizer), {})
        known.update({id(v): v for v in plan.variables})
    for plan in plans:
        plan.built_on = list(variables_of[id(plan.optimizer)].values())
        if not plan.optimizer.built:
            plan.optimizer.build(plan.built_on)
    if isinstance(model.optimizer, OptimizerGroup):
        model.optimizer.build([], {plan.name: plan.built_on for plan in plans})
