"""Names of tasks and engines, and where their code lives. Imports no framework."""

import importlib
import importlib.util

TASKS = ("toy", "digits", "adversarial", "vae", "gan", "score", "score-digits", "mnist")

ENGINES = ("tensorflow", "torch", "flax", "keras-tensorflow", "keras-torch", "keras-jax")

# Keras is fixed per process; each engine runs in a process whose KERAS_BACKEND is this one.
# The native tensorflow engine needs it too: TF 2.21's tf.keras *is* Keras 3 and follows it.
KERAS_BACKEND = {
    "tensorflow": "tensorflow",
    "torch": "torch",
    "flax": "jax",
    "keras-tensorflow": "tensorflow",
    "keras-torch": "torch",
    "keras-jax": "jax",
}

_MODULE = {
    "tensorflow": "with_tensorflow",
    "torch": "with_torch",
    "flax": "with_flax",
    "keras-tensorflow": "with_keras",
    "keras-torch": "with_keras",
    "keras-jax": "with_keras",
}


# The extra (`pip install 'customfit[EXTRA]'`) that brings each engine's framework: named after
# the Keras backend the engine runs on. And the modules the engine imports from it, looked up with
# find_spec, so that asking imports nothing.
EXTRA = dict(KERAS_BACKEND)
_FRAMEWORK_MODULES = {
    "tensorflow": ("tensorflow",),
    "torch": ("torch",),
    "flax": ("jax", "flax", "optax"),
    "keras-tensorflow": ("tensorflow",),
    "keras-torch": ("torch",),
    "keras-jax": ("jax",),
}


def missing_modules(engine):
    """The framework modules this engine needs that are not installed (empty when it can run)."""
    return [name for name in _FRAMEWORK_MODULES[engine] if importlib.util.find_spec(name) is None]


def spec(task):
    return importlib.import_module(f"customfit.tasks.{task.replace('-', '_')}.spec")


def hook(spec, name):
    """A spec's hook, or the contract's default where the spec leaves it out
    (customfit.protocol.OPTIONAL)."""
    from customfit.protocol import OPTIONAL

    return getattr(spec, name, OPTIONAL[name])


def defaults(spec, model, task_options=None):
    """A task's default training settings for one of its models: DEFAULTS, then the model's
    MODEL_DEFAULTS, then, given the task's options, what training_defaults(options) says (score:
    each --method its own length)."""
    settings = {**spec.DEFAULTS, **hook(spec, "MODEL_DEFAULTS").get(model, {})}
    if task_options is not None:
        settings.update(hook(spec, "training_defaults")(task_options))
    return settings


def all_option_names():
    """Every task's own option names (so that an option of another task gets its own error)."""
    return {name for task in TASKS for name in hook(spec(task), "OPTIONS")}


def trainer_class(task, engine):
    """The engine's Trainer for a task (see customfit.protocol)."""
    family = spec(task).FAMILY
    module = importlib.import_module(f"customfit.tasks.{family}.{_MODULE[engine]}")
    return module.Trainer
