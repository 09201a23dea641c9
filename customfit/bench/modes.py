"""Eager and compiled steps, per engine: each mode's name, and how a classifier Trainer is put
into it (the engines' own switches: tf.config.run_functions_eagerly, tf.function(jit_compile=
True), nn.Module.compile, jax.disable_jit, Keras's run_eagerly and jit_compile).

The first mode of each engine's list is eager; DEFAULT is what `customfit run` uses."""

import contextlib
import functools

MODES = {
    "tensorflow": ("eager", "tf.function", "tf.function+XLA"),
    "torch": ("eager", "torch.compile"),
    "flax": ("eager", "nnx.jit"),
    "keras-tensorflow": ("eager", "tf.function", "jit_compile (XLA)"),
    "keras-torch": ("eager", "jit_compile (torch.compile)"),
    "keras-jax": ("eager", "jit_compile (jax.jit)"),
}
DEFAULT = {
    "tensorflow": "tf.function",
    "torch": "eager",
    "flax": "nnx.jit",
    # Keras's own default on a CPU (jit_compile="auto"): no XLA for TensorFlow, eager for torch.
    "keras-tensorflow": "tf.function",
    "keras-torch": "eager",
    "keras-jax": "jit_compile (jax.jit)",
}


def chosen(engine, compiled):
    """The modes `--compiled on|off|both` asks for on this engine."""
    modes = MODES[engine]
    return {"off": modes[:1], "on": modes[1:], "both": modes}[compiled]


@contextlib.contextmanager
def applied(engine, mode, trainer):
    """Put `trainer` (a classifier Trainer of `engine`) into `mode` for the duration."""
    if engine == "tensorflow":
        import tensorflow as tf

        if mode == "tf.function+XLA":
            # The same step function, traced again with XLA; the instance attribute shadows the
            # class's tf.function for as long as the cell runs.
            step = type(trainer).train_step.python_function
            trainer.train_step = tf.function(
                functools.partial(step, trainer), jit_compile=True, reduce_retracing=True
            )
        tf.config.run_functions_eagerly(mode == "eager")
        try:
            yield
        finally:
            tf.config.run_functions_eagerly(False)
            trainer.__dict__.pop("train_step", None)
    elif engine == "torch":
        if mode == "torch.compile":
            trainer.model.compile()  # in place: the parameters (and the optimizer's) stay
        yield
    elif engine == "flax":
        import jax

        with jax.disable_jit(mode == "eager"):
            yield
    else:
        model = trainer.model
        before = model.run_eagerly, model.jit_compile
        model.run_eagerly = mode == "eager" and engine != "keras-torch"
        model.jit_compile = mode.startswith("jit_compile")
        model.train_function = None  # fit() makes it again, in this mode
        try:
            yield
        finally:
            model.run_eagerly, model.jit_compile = before
            model.train_function = None
