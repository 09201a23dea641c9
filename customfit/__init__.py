"""customfit: write your own training objective, train it with TensorFlow, PyTorch or JAX.

Importing this package imports no framework: `Model`, `Update`, `ops`, `frozen`, `run` and
`compare` are resolved on first use, so `customfit --help` stays fast and the Keras backend can
still be chosen (KERAS_BACKEND) before Keras is imported.
"""

__version__ = "0.1.0"

_LAZY = {
    "Model": ("customfit.core.model", "Model"),
    "Update": ("customfit.core.update", "Update"),
    "ops": ("customfit.core.ops", None),
    "frozen": ("customfit.core.ops", "frozen"),
    "run": ("customfit.runs", "run"),
    "Result": ("customfit.runs", "Result"),
    "compare": ("customfit.comparison", "compare"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'customfit' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
