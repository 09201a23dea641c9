"""The plan of a cf.Model's step, made once from one batch: its updates resolved (objective,
sub-model, optimizer, variables), the names their objectives' entries are logged under, their
metric trackers and their optimizers built."""

import contextlib
from dataclasses import dataclass, field

import keras
from keras import tree
from keras.src.backend import compute_output_spec

from customfit.core import layer_losses, loss_scale
from customfit.core.backends import backend_module
from customfit.core.data_spec import keep_spec
from customfit.core.layers import all_layers
from customfit.core.optimizer_group import OptimizerGroup
from customfit.core.step_plan import StepPlan, checked_entries, unpack
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
    # The objective's entries that report a Keras metric the model keeps (key -> metric).
    metrics: dict = field(default_factory=dict)
    adds_layer_losses: bool = False  # its layers add losses that the objective does not read
    collect_losses: bool = False  # its layers add losses, or the objective reads them


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
    kept = kept_metrics(model)
    keys = [inspect(model, plan, unpack(spec), kept) for plan in plans]
    for plan, own in zip(plans, keys):
        others = {k for other in keys if other is not own for k in other}
        plan.metric_names = metric_names(plan, own, others, len(plans))
        if isinstance(plan.optimizer, loss_scale.LossScaleOptimizer):
            alone = len(plans) == 1 and plan.name == "loss"
            plan.skip_name = "skipped_steps" if alone else f"{plan.name}_skipped_steps"
    logged = [n for p in plans for n in p.metric_names.values()]
    counted = [p.skip_name for p in plans if p.skip_name]
    averaged = [n for p in plans for k, n in p.metric_names.items() if k not in p.metrics]
    trackers = make_trackers(model, averaged, counted)
    build_optimizers(model, plans)
    model.built = True
    after_step = None if getattr(model.after_step, "default", False) else model.after_step
    step_plan = StepPlan(
        plans,
        trackers,
        list(dict.fromkeys(logged)),
        list(dict.fromkeys(counted)),
        model.optimizer,
        after_step,
    )
    object.__setattr__(model, "_cf_plan", step_plan)
    return step_plan


def kept_metrics(model):
    """The Keras metrics the user's model keeps (attributes of it or of its layers), not ours."""
    ours = {id(t) for t in (getattr(model, "_cf_trackers", None) or {}).values()}
    return [m for m in model.metrics if id(m) not in ours]


def inspect(model, plan, spec, kept):
    """One symbolic run of an update's objective: the keys of its entries; which of them report
    a Keras metric the model keeps (the metric itself, or its result() as returned); whether its
    layers add losses, and whether it reads them itself (then none are added for it)."""
    seen = {}

    def run(data):
        with layer_losses.collecting():
            out = plan.objective(data, training=True)
            seen["reads"] = bool(read)
            seen["layer_losses"] = len(plan.submodel.losses)
        seen["out"] = out
        return checked_entries(out)

    with layer_losses.reads_noted() as read, results_noted(kept) as results:
        keys = list(compute_output_spec(run, spec))
        out = seen["out"] if isinstance(seen["out"], dict) else {}
        for key, value in out.items():
            metric = value if isinstance(value, keras.metrics.Metric) else results.get(id(value))
            if metric is None:
                continue
            if not any(metric is m for m in kept):
                raise ValueError(
                    f"objective's entry {key!r} is the metric {metric.name!r}, which the model "
                    "does not keep: make it an attribute in __init__ (self.m = keras.metrics."
                    f"{type(metric).__name__}()) so that fit() resets it and carries its state"
                )
            if key == "loss":
                raise ValueError(
                    f"objective's 'loss' is the result of the metric {metric.name!r}; return "
                    "the tensor to minimize as 'loss' and the metric under another key"
                )
            plan.metrics[key] = metric
    plan.collect_losses = bool(seen["layer_losses"] or seen["reads"])
    plan.adds_layer_losses = bool(seen["layer_losses"]) and not seen["reads"]
    return keys


@contextlib.contextmanager
def results_noted(metrics):
    """{id(tensor): metric} for every result() the metrics return inside the block (each
    tensor kept alive, so that its id is not reused while the block runs)."""
    found, kept_alive = {}, []

    def noting(metric, result):
        def noted(*args, **kwargs):
            value = result(*args, **kwargs)
            kept_alive.append(value)
            found[id(value)] = metric
            return value

        return noted

    for metric in metrics:
        object.__setattr__(metric, "result", noting(metric, metric.result))
    try:
        yield found
    finally:
        for metric in metrics:
            object.__delattr__(metric, "result")


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
