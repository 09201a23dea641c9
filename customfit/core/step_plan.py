"""StepPlan: what every backend's train and test step runs, once cf.Model has resolved its
updates: each objective run and checked, its gradient applied, its entries recorded."""

import contextlib

import keras
from keras import ops as K
from keras import tree

from customfit.core import layer_losses, loss_scale
from customfit.core.optimizer_group import OptimizerGroup


def unpack(data):
    """The batch as the objective gets it, as fit() gives it: fit(x) yields (x,), and the
    objective gets x itself; train_on_batch(x, y) and test_on_batch hand the step
    (x, y, None), and the objective gets (x, y)."""
    if isinstance(data, tuple):
        while len(data) > 1 and data[-1] is None:
            data = data[:-1]
        if len(data) == 1:
            return data[0]
    return data


def run_objective(update, data, training):
    """The update's objective on `data`, as a dict holding "loss" (a scalar): with the losses
    its layers added where the update counts them (layer_losses.py), and a Keras metric the
    objective returned as its current result."""
    with layer_losses.collecting() if update.collect_losses else contextlib.nullcontext():
        entries = checked_entries(update.objective(data, training=training))
        if update.adds_layer_losses:
            entries["loss"] = layer_losses.added(entries["loss"], update.submodel)
    return entries


def checked_entries(out):
    """An objective's return value as a dict holding a scalar "loss"; its Keras metrics (an
    entry may be a metric the objective updated) read as their results."""
    if isinstance(out, dict):
        if "loss" not in out:
            raise ValueError(
                "objective must return a scalar loss or a dict holding 'loss'; got a dict "
                f"with keys {sorted(out)}"
            )
        if isinstance(out["loss"], keras.metrics.Metric):
            raise ValueError(
                "objective's 'loss' must be the tensor to minimize; got the metric "
                f"{out['loss'].name!r}: return its result under another key"
            )
        entries = {
            k: v.result() if isinstance(v, keras.metrics.Metric) else v for k, v in out.items()
        }
    elif out is None or isinstance(out, (str, list, tuple, keras.metrics.Metric)):
        raise ValueError(
            "objective must return a scalar loss or a dict holding 'loss'; got "
            f"{type(out).__name__}"
        )
    else:
        entries = {"loss": out}
    shape = tuple(K.shape(entries["loss"]))
    if shape != ():
        raise ValueError(
            f"objective's loss must be a scalar (shape ()); got shape {shape}: reduce it, "
            "e.g. with keras.ops.mean"
        )
    return entries


def scaled_loss(update, loss):
    """The loss to differentiate: times the loss scale under a LossScaleOptimizer (its
    apply() divides the gradients by it again), times loss_scale_factor if one is set."""
    return update.optimizer.scale_loss(loss)


def applied(update, grads, frozen_ids):
    """(gradient, variable) pairs an update applies: none for frozen or unused variables."""
    return [
        (g, v) for g, v in zip(grads, update.variables) if g is not None and id(v) not in frozen_ids
    ]


class StepPlan:
    """The updates in the order they run (`updates`, each a plan.Plan) and the trackers their
    objectives' entries are recorded in (`trackers`: logged name -> metric)."""

    def __init__(self, updates, trackers, logged, counted, optimizer, after_step=None):
        self.updates = updates
        self.trackers = trackers
        self.logged = logged  # the objectives' entries, as logged
        self.counted = counted  # counts of skipped steps (fit() logs them, evaluate() does not)
        self.optimizer = optimizer  # the model's: one optimizer or an OptimizerGroup
        self.after_step = after_step  # the model's after_step(), where it defines one
        # What each logged name reports: our tracker, or the Keras metric the objective keeps.
        kept = {update.metric_names[k]: m for update in updates for k, m in update.metrics.items()}
        self.reporters = {**trackers, **kept}

    def apply(self, update, grads, frozen_ids):
        pairs = applied(update, grads, frozen_ids)
        if not pairs:
            return
        before = loss_scale.scale_of(update.optimizer) if update.skip_name else None
        update.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        if update.skip_name:
            self.count_skipped(update, before, loss_scale.scale_of(update.optimizer))

    def count_skipped(self, update, scale_before, scale_after):
        self.trackers[update.skip_name].update_state(loss_scale.skipped(scale_before, scale_after))

    def record(self, update, entries, data):
        # Weighted by batch size, as Keras weights its loss: an epoch's figure is then the
        # mean over samples even when the last batch is short.
        leaves = [t for t in tree.flatten(data) if t is not None and len(K.shape(t)) > 0]
        weight = K.shape(leaves[0])[0] if leaves else 1
        for key, name in update.metric_names.items():
            if key not in update.metrics:  # a kept metric was updated by the objective itself
                self.trackers[name].update_state(entries[key], sample_weight=weight)

    def stateful_test_step(self, data):
        """test_step where variables hold their own state (tensorflow, torch): each update's
        objective with training=False, recorded as metrics."""
        data = unpack(data)
        for update in self.updates:
            self.record(update, run_objective(update, data, training=False), data)
        return self.logs(training=False)

    def count_step(self):
        # A group's own step count (its members count theirs as they apply).
        if isinstance(self.optimizer, OptimizerGroup):
            self.optimizer.iterations.assign_add(1)

    def logs(self, training=True):
        names = self.logged + (self.counted if training else [])
        return {name: self.reporters[name].result() for name in names}
