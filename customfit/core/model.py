"""cf.Model: write `objective(self, data, training=True)` once; fit()/evaluate() train it on
the tensorflow, torch and jax backends (the step itself is in customfit/core/backends/)."""

import keras
from keras import ops as K
from keras import tree
from keras.src.backend import compute_output_spec

from customfit.core import loss_scale
from customfit.core.backends import backend_module
from customfit.core.data_spec import first_batch, spec_from_config, spec_to_config
from customfit.core.optimizer_group import OptimizerGroup
from customfit.core.plan import build_optimizers, metric_names, resolve_updates
from customfit.core.update import Update


class Model(backend_module().Step):
    """A keras.Model trained by its own `objective(data, training=True)`.

    Subclass it: make the layers in `__init__`, write `objective` with `keras.ops`, then
    `compile(optimizer=...)`, `fit()`, `evaluate()` and `predict()` as with any Keras model, on
    the tensorflow, torch and jax backends alike. The objective returns a scalar loss, or a dict
    holding "loss" and other named scalars, which fit() and evaluate() track as metrics. `call()`
    is optional: define it for `predict()` and `model(x)`. For several optimizers, compile with a
    dict of them and define `updates()`.

    Example:
        ```python
        import keras
        from keras import ops
        import customfit as cf

        class Regressor(cf.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(1)

            def call(self, x):
                return self.dense(x)

            def objective(self, data, training=True):
                x, y = data
                error = self(x) - y
                return {"loss": ops.mean(error**2), "mae": ops.mean(ops.abs(error))}

        model = Regressor()
        model.compile(optimizer="adam")
        history = model.fit(x, y, epochs=10)         # history.history: loss, mae
        model.evaluate(x, y, return_dict=True)       # {"loss": ..., "mae": ...}
        ```
    """

    def objective(self, data, training=True):
        """What one training step minimizes; define it in your subclass.

        Args:
            data: the batch as fit() got it: `x` for `fit(x)`, `(x, y)` for `fit(x, y)`,
                `(x, y, sample_weight)` for `fit(x, y, sample_weight=...)`.
            training: True in fit(), False in evaluate(); pass it on to layers whose behaviour
                differs (dropout, batch normalization).

        Returns:
            A scalar tensor (the loss), or a dict holding "loss" and any other named scalars.
            Every entry is tracked as a metric (a batch-size-weighted mean over the epoch),
            shown in the progress bar and kept in the History.

        Example:
            ```python
            def objective(self, data, training=True):
                x, y = data
                logits = self(x, training=training)
                loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True))
                hit = ops.cast(ops.argmax(logits, -1) == ops.cast(y, "int32"), "float32")
                return {"loss": loss, "accuracy": ops.mean(hit)}
            ```
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define objective(self, data, training=True)"
        )

    def updates(self):
        """Which objective trains which sub-model, with which optimizer; override it for several.

        By default (None) one update minimizes `objective` over all trainable variables with the
        one optimizer given to compile(). Overridden, it returns `cf.Update` entries, run in
        order once per batch, each `repeat` times; compile() then takes a dict of optimizers
        keyed by the updates' names. An update's "loss" is logged as `<name>_loss`.

        Returns:
            None, or a non-empty list of `cf.Update`.

        Example:
            ```python
            def updates(self):
                return [cf.Update("critic", self.critic_objective, self.critic, repeat=5),
                        cf.Update("generator", self.generator_objective, self.generator)]

            model.compile(optimizer={"critic": keras.optimizers.Adam(1e-4),
                                     "generator": keras.optimizers.Adam(1e-4)})
            ```
        """
        return None

    # ---- compile: optimizers, and nothing Keras would compute besides the objective ----

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Set the optimizer (or one per update); the objective replaces Keras's loss and metrics.

        Args:
            optimizer: a Keras optimizer or its name, or a dict {update name: optimizer} when
                `updates()` names several. Under the "mixed_float16" dtype policy each is
                wrapped in a `keras.optimizers.LossScaleOptimizer` (every member of a dict its
                own, with its own loss scale), as Keras wraps one: each update's loss is scaled
                before differentiation and its gradients unscaled before they are applied; a step
                whose gradients overflow is skipped and counted in the metric `skipped_steps`
                (`<name>_skipped_steps` with several updates).
            loss: must be None (the objective is the loss).
            metrics: must be None (the objective's dict entries are the metrics).
            **kwargs: passed to keras.Model.compile, e.g. `jit_compile`, `run_eagerly`,
                `steps_per_execution`, `auto_scale_loss` (False: no wrapping).

        Returns:
            None.

        Raises:
            ValueError: for loss= or metrics=, or an empty dict of optimizers.

        Example:
            ```python
            model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
            ```
        """
        if loss is not None or metrics is not None:
            raise ValueError(
                "cf.Model trains its objective(): compile() takes an optimizer, not loss= or "
                f"metrics=; got loss={loss!r}, metrics={metrics!r}"
            )
        if isinstance(optimizer, dict):
            if not optimizer:
                raise ValueError("compile(optimizer={...}) needs at least one named optimizer")
            optimizer = OptimizerGroup(
                {name: keras.optimizers.get(o) for name, o in optimizer.items()}
            )
        auto_scale_loss = kwargs.pop("auto_scale_loss", True)
        if isinstance(optimizer, OptimizerGroup):
            # Each member gets its own loss scale (its updates' gradients overflow on their own);
            # Keras would wrap the group as a whole, whose apply() updates nothing.
            if loss_scale.wants_loss_scale(self, auto_scale_loss) and not optimizer.built:
                optimizer = OptimizerGroup(
                    {k: loss_scale.loss_scaled(m, k) for k, m in optimizer.members.items()},
                    name=optimizer.name,
                )
            auto_scale_loss = False
        super().compile(optimizer=optimizer, auto_scale_loss=auto_scale_loss, **kwargs)
        self._loss_tracker = None  # the objective's own "loss" tracker replaces Keras's
        object.__setattr__(self, "_plans", None)

    # ---- saving: what load_model needs to rebuild the step before it loads the state ----
    # Keras saves get_build_config() and get_compile_config() beside the weights, and on
    # loading calls build_from_config(), then compile_from_config(), then loads every variable
    # (the sub-models', the optimizers' slots, the trackers'): all of them must exist by then.
    # A cf.Model is built by running its objectives on the batch fit() got, so its build
    # config records that batch's structure, shapes and dtypes.

    def get_build_config(self):
        config = dict(super().get_build_config() or {})
        spec = getattr(self, "_cf_data_spec", None)
        if spec is not None:
            config["data_spec"] = spec_to_config(spec)
        return config or None

    def build_from_config(self, config):
        config = dict(config or {})
        spec = config.pop("data_spec", None)
        if config:
            super().build_from_config(config)  # call()'s input shape, as Keras records it
        if spec is not None:
            spec = spec_from_config(spec)
            object.__setattr__(self, "_cf_data_spec", spec)
            # The sub-models' variables now; the optimizers' once compile_from_config has them.
            updates = self.updates() or [Update("loss", self.objective, self)]
            for u in updates:
                compute_output_spec(
                    lambda d, u=u: u.objective(d, training=True), self._unpack(spec)
                )
        self.built = True

    # get_compile_config() is Keras's own: the optimizer (an OptimizerGroup serialises too) and
    # compile()'s options. Keras skips compiling a loaded model whose compile() is overridden,
    # unless compile_from_config() is too.
    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        spec = getattr(self, "_cf_data_spec", None)
        if spec is not None:
            self._symbolic_build(data_batch=spec)

    # ---- build: resolve the updates, find the objective's metric names, make trackers ----

    def _symbolic_build(self, iterator=None, data_batch=None):
        if getattr(self, "_plans", None) is None:
            if data_batch is None:
                data_batch = first_batch(iterator)
            spec = tree.map_structure(
                lambda v: (
                    None
                    if v is None
                    else keras.KerasTensor(v.shape, keras.backend.standardize_dtype(v.dtype))
                ),
                data_batch,
            )
            plans = resolve_updates(self)
            object.__setattr__(self, "_cf_data_spec", spec)
            keys = [
                list(
                    compute_output_spec(
                        lambda d, plan=plan: self._run_objective(plan, d, training=True),
                        self._unpack(spec),
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
            self._make_trackers(
                [n for p in plans for n in p.metric_names.values()],
                counters=[p.skip_name for p in plans if p.skip_name],
            )
            build_optimizers(self, plans)
            self.built = True
            object.__setattr__(self, "_plans", plans)
        self._post_build()

    def _make_trackers(self, names, counters=()):
        """A Mean per objective entry; a Sum per counter (skipped steps: an epoch's count,
        logged by fit() only)."""
        trackers = getattr(self, "_cf_trackers", None) or {}
        mean = backend_module().Mean
        kinds = {**{n: mean for n in names}, **{n: keras.metrics.Sum for n in counters}}
        missing = [n for n in kinds if n not in trackers]
        if missing:
            # Keras locks a built model's state; trackers must exist before the step is traced.
            was_locked = self._tracker.locked
            self._tracker.unlock()
            for name in missing:
                tracker = kinds[name](name=name)
                self._tracker.add_to_store("metrics", tracker)
                trackers[name] = tracker
            if was_locked:
                self._lock_state()
        object.__setattr__(self, "_cf_trackers", trackers)
        object.__setattr__(self, "_cf_logged", list(dict.fromkeys(names)))
        object.__setattr__(self, "_cf_counted", list(dict.fromkeys(counters)))

    # ---- the pieces every backend's step is made of ----

    @staticmethod
    def _unpack(data):
        # fit(x) yields (x,); hand the objective x itself.
        if isinstance(data, tuple) and len(data) == 1:
            return data[0]
        return data

    def _run_objective(self, plan, data, training):
        out = plan.objective(data, training=training)
        if isinstance(out, dict):
            if "loss" not in out:
                raise ValueError(
                    "objective must return a scalar loss or a dict holding 'loss'; got a dict "
                    f"with keys {sorted(out)}"
                )
            entries = dict(out)
        elif out is None or isinstance(out, (str, list, tuple)):
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

    def _scaled_loss(self, plan, loss):
        """The loss to differentiate: times the loss scale under a LossScaleOptimizer (its
        apply() divides the gradients by it again), times loss_scale_factor if one is set."""
        return plan.optimizer.scale_loss(loss)

    @staticmethod
    def _applied(plan, grads, frozen_ids):
        """(gradient, variable) pairs an update applies: none for frozen or unused variables."""
        return [
            (g, v)
            for g, v in zip(grads, plan.variables)
            if g is not None and id(v) not in frozen_ids
        ]

    def _apply(self, plan, grads, frozen_ids):
        pairs = self._applied(plan, grads, frozen_ids)
        if not pairs:
            return
        before = loss_scale.scale_of(plan.optimizer) if plan.skip_name else None
        plan.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        if plan.skip_name:
            self._count_skipped(plan, before, loss_scale.scale_of(plan.optimizer))

    def _count_skipped(self, plan, scale_before, scale_after):
        self._cf_trackers[plan.skip_name].update_state(
            loss_scale.skipped(scale_before, scale_after)
        )

    def _record(self, plan, entries, data):
        # Weighted by batch size, as Keras weights its loss: an epoch's figure is then the
        # mean over samples even when the last batch is short.
        leaves = [t for t in tree.flatten(data) if t is not None and len(K.shape(t)) > 0]
        weight = K.shape(leaves[0])[0] if leaves else 1
        for key, name in plan.metric_names.items():
            self._cf_trackers[name].update_state(entries[key], sample_weight=weight)

    def _stateful_test_step(self, data):
        """test_step where variables hold their own state (tensorflow, torch): each update's
        objective with training=False, recorded as metrics."""
        data = self._unpack(data)
        for plan in self._plans:
            self._record(plan, self._run_objective(plan, data, training=False), data)
        return self._logs(training=False)

    def _count_step(self):
        if isinstance(self.optimizer, OptimizerGroup):
            self.optimizer.iterations.assign_add(1)

    def _logs(self, training=True):
        names = self._cf_logged + (self._cf_counted if training else [])
        return {name: self._cf_trackers[name].result() for name in names}


def build_train_step(model, data_batch):
    """Build a compiled cf.Model's train step now, from one example batch (only its shapes and
    dtypes are read): the updates resolved, the metric trackers and the optimizers' slots made.
    fit() builds it at its first batch; the workbench calls this when the optimizers' state is to
    be read or loaded before any training (a checkpoint's Adam moments, say). A function, not a
    method: it is not part of cf.Model's public API."""
    model._symbolic_build(data_batch=data_batch)
