"""Names of tasks and engines, and where their code lives. Imports no framework."""

import importlib

TASKS = ("toy", "digits", "adversarial", "vae", "gan", "mnist")

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


def spec(task):
    return importlib.import_module(f"customfit.tasks.{task}.spec")


def all_option_names():
    """Every task's own option names (so that an option of another task gets its own error)."""
    return {name for task in TASKS for name in getattr(spec(task), "OPTIONS", {})}


def trainer_class(task, engine):
    """The engine's Trainer for a task (see customfit.engines.protocol)."""
    family = spec(task).FAMILY
    module = importlib.import_module(f"customfit.tasks.{family}.{_MODULE[engine]}")
    return module.Trainer
