"""The starting weights, backend-neutral: one .npz of every model variable's value by its path,
written once by the first backend's process and loaded by every other (the float64 reference
too, cast). Random-seed states are left out: they are the backend's own and draw nothing here."""

import os

import numpy as np


def _kept(model):
    return [v for v in model.variables if "seed_generator" not in v.path]


def save(model, path):
    import keras

    arrays = {v.path: keras.ops.convert_to_numpy(v.value) for v in _kept(model)}
    if len(arrays) != len(_kept(model)):
        raise ValueError("two of the model's variables share a path; name its layers")
    partial = path + ".partial"
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
    os.replace(partial, path)  # the others wait for the whole file


def load(model, path):
    """Set the model's variables from the file; a variable the file lacks, or of another shape,
    means the factory built another model in this process."""
    with np.load(path, allow_pickle=False) as saved:
        saved = dict(saved)
    for variable in _kept(model):
        value = saved.pop(variable.path, None)
        if value is None or tuple(value.shape) != tuple(variable.shape):
            raise RuntimeError(
                f"the factory built another model on this backend: variable {variable.path} "
                f"{'is not in' if value is None else 'has another shape in'} the first one's"
            )
        variable.assign(value.astype(variable.dtype))
    if saved:
        raise RuntimeError(
            f"the factory built another model on this backend: it lacks {', '.join(sorted(saved))}"
        )
