"""cf.Model: write `objective(self, data, training=True)` once; fit()/evaluate() train it on
the tensorflow, torch and jax backends (the step itself is in customfit/core/backends/)."""

import keras
from keras.src.backend import compute_output_spec

from customfit.core import layer_losses, loss_scale
from customfit.core.backends import backend_module
from customfit.core.data_spec import (
    first_batch,
    keep_spec,
    kept_spec,
    spec_from_config,
    spec_to_config,
)
from customfit.core.optimizer_group import OptimizerGroup
from customfit.core.plan import build, forget_plan, plan_of
from customfit.core.step_plan import unpack
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

        The losses the model's layers add (kernel regularizers, `add_loss`) are added to the
        loss, as `compile(loss=...)` adds `model.losses`: with several updates, each adds those
        of the sub-model it trains. An objective that reads some layer's `.losses` itself (as
        keras-io's custom train steps write `loss + sum(self.losses)`) takes charge of them, and
        nothing is added to it.

        Returns:
            A scalar tensor (the loss), or a dict holding "loss" and any other named scalars.
            Every entry is tracked as a metric (a batch-size-weighted mean over the epoch),
            shown in the progress bar and kept in the History; an entry that is a Keras metric
            the model keeps (an attribute made in `__init__`, updated here with
            `update_state`), or that metric's `result()`, is reported as Keras reports compiled
            metrics instead: its accumulated result, reset at each epoch and each evaluate().

        Example:
            ```python
            def objective(self, data, training=True):
                x, y = data
                logits = self(x, training=training)
                loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True))
                hit = ops.cast(ops.argmax(logits, -1) == ops.cast(y, "int32"), "float32")
                self.auc.update_state(ops.one_hot(y, 10), ops.softmax(logits))  # kept metric
                return {"loss": loss, "accuracy": ops.mean(hit), "auc": self.auc}
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

    def after_step(self):
        """What changes after every training step besides the gradient steps; override it.

        Called once per batch in fit() (and train_on_batch()), after every update's optimizer
        step, inside the compiled step, on every backend: assign to variables here, e.g. an
        exponential moving average of the weights, as keras-io's ddim does after
        `apply_gradients`. Not called by evaluate(). Keep the averaged copy's layers
        `trainable = False`, so that no optimizer trains them.

        Returns:
            None.

        Example:
            ```python
            def after_step(self):
                for weight, average in zip(self.network.weights, self.ema_network.weights):
                    average.assign(0.999 * average + 0.001 * weight)
            ```
        """

    after_step.default = True  # not overridden: the step skips it

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
            metrics: must be None (the objective's dict entries are the metrics; a Keras
                metric such as AUC is kept by the model and returned by the objective).
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
                f"metrics=; got loss={loss!r}, metrics={metrics!r} (keep a Keras metric as an "
                "attribute made in __init__, update it in objective() and return it)"
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
        forget_plan(self)

    # ---- saving: what load_model needs to rebuild the step before it loads the state ----
    # Keras saves get_build_config() and get_compile_config() beside the weights, and on
    # loading calls build_from_config(), then compile_from_config(), then loads every variable
    # (the sub-models', the optimizers' slots, the trackers'): all of them must exist by then.
    # A cf.Model is built by running its objectives on the batch fit() got, so its build
    # config records that batch's structure, shapes and dtypes.

    def get_build_config(self):
        config = dict(super().get_build_config() or {})
        spec = kept_spec(self)
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
            keep_spec(self, spec)
            # The sub-models' variables now; the optimizers' once compile_from_config has them.
            updates = self.updates() or [Update("loss", self.objective, self)]
            for u in updates:
                compute_output_spec(lambda d, u=u: _symbolic_objective(u, d), unpack(spec))
        self.built = True

    # get_compile_config() is Keras's own: the optimizer (an OptimizerGroup serialises too) and
    # compile()'s options. Keras skips compiling a loaded model whose compile() is overridden,
    # unless compile_from_config() is too.
    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        spec = kept_spec(self)
        if spec is not None:
            build_train_step(self, spec)

    # ---- build: Keras's trainers call this hook at fit()'s and evaluate()'s first batch ----

    def _symbolic_build(self, iterator=None, data_batch=None):
        if plan_of(self) is None:
            build(self, first_batch(iterator) if data_batch is None else data_batch)
        self._post_build()


def _symbolic_objective(update, data):
    with layer_losses.collecting():  # an objective that reads its layers' losses finds them
        return update.objective(data, training=True)


def build_train_step(model, data_batch):
    """Build a compiled cf.Model's train step now, from one example batch (only its shapes and
    dtypes are read): the updates resolved, the metric trackers and the optimizers' slots made.
    fit() builds it at its first batch; the workbench calls this when the optimizers' state is to
    be read or loaded before any training (a checkpoint's Adam moments, say). A function, not a
    method: it is not part of cf.Model's public API."""
    # Keras offers no public way to build a model's step before fit(): its trainers call this
    # hook, which cf.Model overrides (and in which Keras's torch backend registers the
    # variables as the module's parameters). The one call of it from outside the model.
    model._symbolic_build(data_batch=data_batch)
