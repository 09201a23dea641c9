"""One module per Keras backend: the only place the core imports tensorflow, torch or jax.

Each module defines
  value_and_grad(fn, args, argnums) -> (value, aux, grads): fn(*args) returns (scalar, aux);
      grads are taken with respect to args[i] for i in argnums, and stay differentiable, so
      gradients nest;
  Step: a keras.Model subclass whose train_step/test_step run cf.Model's plan of updates;
  Mean: the tracker each objective entry is recorded in (keras.metrics.Mean, or a faster
      equivalent).
"""

import importlib

_MODULES = {
    "tensorflow": "customfit.core.backends.tensorflow_step",
    "torch": "customfit.core.backends.torch_step",
    "jax": "customfit.core.backends.jax_step",
}


def backend_module():
    import keras

    name = keras.backend.backend()
    if name not in _MODULES:
        raise RuntimeError(
            f"customfit runs on the Keras backends {', '.join(_MODULES)}; KERAS_BACKEND is {name!r}"
        )
    return importlib.import_module(_MODULES[name])
