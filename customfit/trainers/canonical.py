"""One converter between the frameworks' weight layouts. Imports no framework.

The canonical layout is Keras's, in layer order, each kernel followed by its bias:

    dense kernel  (in, out)             PyTorch nn.Linear weight  (out, in)
    conv kernel   (kh, kw, in, out)     PyTorch nn.Conv2d weight  (out, in, kh, kw)
    bias          (out,)                the same everywhere

TensorFlow (tf.keras), the Keras engines and Flax NNX (nnx.Linear, nnx.Conv) already store their
weights this way; only PyTorch differs. Every array that crosses the Trainer boundary (weights,
gradients, Adam moments) is canonical, so a checkpoint or a gradient can be compared across engines.

A weight's role is told by its rank alone (1: bias, 2: dense, 4: conv), which holds for every
layer the classifiers use (customfit.tasks.classifier.architectures).
"""

import numpy as np

# Frameworks whose layout is already the canonical one. Engine names are accepted too.
_CANONICAL = {"keras", "tensorflow", "flax", "jax", "keras-tensorflow", "keras-torch", "keras-jax"}
_TORCH = {"torch", "pytorch"}


def _check(framework):
    if framework not in _CANONICAL and framework not in _TORCH:
        known = ", ".join(sorted(_CANONICAL | _TORCH))
        raise ValueError(f"unknown framework {framework!r}; expected one of: {known}")


def _torch_to_keras(array):
    if array.ndim == 2:  # Linear (out, in) -> (in, out)
        return array.T
    if array.ndim == 4:  # Conv2d (out, in, kh, kw) -> (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    return array


def _keras_to_torch(array):
    if array.ndim == 2:  # (in, out) -> Linear (out, in)
        return array.T
    if array.ndim == 4:  # (kh, kw, in, out) -> Conv2d (out, in, kh, kw)
        return array.transpose(3, 2, 0, 1)
    return array


# Both directions always copy: `tensor.numpy()` shares memory with the live parameter, so a
# view handed out by get_weights() or state() would change as training goes on, and an array
# handed in to load_state() would be updated in place by the optimizer.


def to_canonical(framework, arrays):
    """A framework's arrays (NumPy, in layer order) in Keras's layout, as new contiguous arrays."""
    _check(framework)
    convert = _torch_to_keras if framework in _TORCH else (lambda a: a)
    return [np.array(convert(np.asarray(a)), order="C", copy=True) for a in arrays]


def from_canonical(framework, arrays):
    """Arrays in Keras's layout (layer order), laid out the way `framework` stores them, as new
    contiguous arrays."""
    _check(framework)
    convert = _keras_to_torch if framework in _TORCH else (lambda a: a)
    return [np.array(convert(np.asarray(a)), order="C", copy=True) for a in arrays]


def check_shapes(expected, arrays, what="weights"):
    """Raise ValueError naming the first array whose shape is not the expected one."""
    arrays = list(arrays)
    if len(arrays) != len(expected):
        raise ValueError(f"{what}: expected {len(expected)} arrays, given {len(arrays)}")
    for i, (shape, array) in enumerate(zip(expected, arrays)):
        if tuple(np.shape(array)) != tuple(shape):
            raise ValueError(
                f"{what}[{i}]: expected shape {tuple(shape)}, given {tuple(np.shape(array))}"
            )


# What every native classifier engine's Trainer.state() holds, canonical arrays only, so that a
# checkpoint reads the same whichever engine wrote it (and loads without running code from it).
STATE_FORMAT = "customfit.classifier.adam/1"


def pack_adam_state(weights, first_moments, second_moments, step):
    """A flat dict name -> array: weights/i, adam/m/i, adam/v/i (all canonical) and adam/step."""
    arrays = {}
    for prefix, group in (
        ("weights", weights),
        ("adam/m", first_moments),
        ("adam/v", second_moments),
    ):
        for i, array in enumerate(group):
            arrays[f"{prefix}/{i}"] = np.asarray(array)
    arrays["adam/step"] = np.asarray(int(step), dtype=np.int64)
    return arrays


def check_state_meta(meta):
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        given = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"state: expected format {STATE_FORMAT!r}, given {given!r}")


def unpack_adam_state(arrays, shapes):
    """(weights, first moments, second moments, step) from pack_adam_state's dict, shapes checked."""
    groups = []
    for prefix in ("weights", "adam/m", "adam/v"):
        names = [f"{prefix}/{i}" for i in range(len(shapes))]
        missing = [name for name in names if name not in arrays]
        if missing:
            raise ValueError(f"state: expected arrays {names}, missing {missing}")
        group = [np.asarray(arrays[name], dtype=np.float32) for name in names]
        check_shapes(shapes, group, what=f"state {prefix}")
        groups.append(group)
    if "adam/step" not in arrays:
        raise ValueError("state: expected an array 'adam/step', none given")
    return groups[0], groups[1], groups[2], int(np.asarray(arrays["adam/step"]))
