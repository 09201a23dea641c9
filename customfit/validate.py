"""Checks of what a user gives: names, numbers, data. Each failure is a one-line UsageError that
says what was expected and what was given. Imports NumPy only (no framework)."""

import math
import numbers
import os
import stat
import sys

import numpy as np

from customfit.data import Split
from customfit.errors import UsageError

DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


def one_of(field, value, choices, what=""):
    if not isinstance(value, str) or value not in choices:
        suffix = f" {what}" if what else ""
        raise UsageError.expected(field, f"one of {', '.join(choices)}{suffix}", value)
    return value


def installed_engine(field, engine):
    """An engine whose framework is installed; else the extra that brings it, in one line."""
    from customfit import registry

    missing = registry.missing_modules(engine)
    if missing:
        raise UsageError.expected(
            field,
            f"an engine whose framework is installed (for {engine}: "
            f"pip install 'customfit[{registry.EXTRA[engine]}]')",
            given=f"{engine!r} without {' and '.join(missing)} installed",
        )
    return engine


def _as_number(field, value, kind, expected):
    if isinstance(value, bool):
        raise UsageError.expected(field, expected, value)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            raise UsageError.expected(field, expected, value) from None
    if kind is int:
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise UsageError.expected(field, expected, value)
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            raise UsageError.expected(field, expected, value) from None
    raise UsageError.expected(field, expected, value)


# Counts (epochs, batch size) beyond what an index can hold reach no framework: itertools.islice
# refuses them inside PyTorch's DataLoader.
MAX_COUNT = sys.maxsize
# keras.utils.set_random_seed hands the seed to NumPy's legacy seeding, which takes 32 bits.
MAX_SEED = 2**32 - 1
# Every engine trains in float32: a learning rate must be a positive float32.
FLOAT32_TINY, FLOAT32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)


def positive_int(field, value):
    """An integer > 0 (epochs, batch size). Strings of digits are accepted (the command line)."""
    n = _as_number(field, value, int, "an integer > 0")
    if n <= 0:
        raise UsageError.expected(field, "an integer > 0", value)
    if n > MAX_COUNT:
        raise UsageError.expected(field, "an integer > 0 and at most 2**63 - 1", value)
    return n


def at_least_five(field, value):
    """An integer >= 5 (a median of fewer timed repeats says little)."""
    return int_in(field, value, 5)


def non_negative_int(field, value):
    """An integer >= 0 (bench's --threads, where 0 means each framework's own default)."""
    return int_in(field, value, 0)


def seed(field, value):
    n = _as_number(field, value, int, "an integer >= 0")
    if n < 0:
        raise UsageError.expected(field, "an integer >= 0", value)
    if n > MAX_SEED:
        raise UsageError.expected(
            field, f"an integer >= 0 and at most 2**32 - 1 ({MAX_SEED})", value
        )
    return n


def positive_float(field, value):
    """A finite number > 0 that float32 holds (the learning rate)."""
    x = _as_number(field, value, float, "a positive number")
    if not math.isfinite(x) or x <= 0:
        raise UsageError.expected(field, "a positive number", value)
    if not FLOAT32_TINY <= x <= FLOAT32_MAX:
        raise UsageError.expected(
            field,
            f"a positive number that float32 holds ({FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g})",
            value,
        )
    return x


def int_in(field, value, low=None, high=None):
    """An integer in [low, high] (either end may be None: unbounded)."""
    expected = _range_words("an integer", low, high, False)
    n = _as_number(field, value, int, expected)
    if (low is not None and n < low) or (high is not None and n > high):
        raise UsageError.expected(field, expected, value)
    return n


def float_in(field, value, low=None, high=None, low_open=False):
    """A finite number in [low, high], or (low, high] with low_open."""
    expected = _range_words("a number", low, high, low_open)
    x = _as_number(field, value, float, expected)
    if (
        not math.isfinite(x)
        or (low is not None and (x <= low if low_open else x < low))
        or (high is not None and x > high)
    ):
        raise UsageError.expected(field, expected, value)
    return x


def _range_words(what, low, high, low_open):
    if low is not None and high is not None:
        return f"{what} {'>' if low_open else '>='} {low:g} and <= {high:g}"
    if low is not None:
        return f"{what} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{what} <= {high:g}"
    return what


def folder(field, value):
    """An existing folder."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise UsageError.expected(field, "a folder", value)
    path = os.fspath(value)
    if not os.path.isdir(path):
        raise UsageError.expected(
            field,
            "an existing folder",
            given=f"{path!r}, which " + ("is a file" if os.path.exists(path) else "does not exist"),
        )
    return path


def task_shapes(spec):
    """(input shape without batch, number of classes) for a task: from its spec if it says,
    else from its own data set."""
    from customfit import registry

    shape = registry.hook(spec, "INPUT_SHAPE")
    classes = registry.hook(spec, "NUM_CLASSES")
    if shape is None or classes is None:
        split = spec.load()
        shape, classes = split.input_shape, split.num_classes
    if classes is None:
        # The generative tasks learn the built-in digits; --data is labelled classifier data.
        raise UsageError.expected(
            "data", f"no --data (task {spec.NAME} trains on its built-in data)", given="a data file"
        )
    return tuple(shape), int(classes)


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _read_npz(path):
    expected = f"an .npz file holding {', '.join(DATA_KEYS)}"
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UsageError.expected("data", expected, given=f"{path!r}, which does not exist")
    if os.path.isdir(path):
        raise UsageError.expected("data", expected, given=f"{path!r}, which is a folder")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UsageError.expected("data", expected, given=f"{path!r} ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):  # a pipe or a device would be read forever
        raise UsageError.expected("data", expected, given=f"{path!r}, which is not a regular file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single array")
            missing = [k for k in DATA_KEYS if k not in npz.files]
            if missing:
                raise UsageError.expected(
                    "data",
                    expected,
                    given=f"{path!r}, which lacks {', '.join(missing)} (it has {', '.join(npz.files) or 'nothing'})",
                )
            return {k: npz[k] for k in DATA_KEYS}
    except UsageError:
        raise
    except Exception as e:  # a damaged zip, pickled objects, a plain .npy ...
        raise UsageError.expected(
            "data", expected, given=f"{path!r}, which cannot be read ({' '.join(str(e).split())})"
        ) from None


def _check_inputs(name, x, input_shape):
    try:
        x = np.asarray(x)
    except Exception:
        raise UsageError.expected(
            "data", f"{name} as a numeric array", given=type(x).__name__
        ) from None
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise UsageError.expected("data", f"{name} as a numeric array", given=f"dtype {x.dtype}")
    want = (None,) + tuple(input_shape)
    # 8x8 images without their channel axis are taken as one channel.
    if (
        x.ndim == len(want) - 1
        and len(input_shape) == 3
        and input_shape[-1] == 1
        and tuple(x.shape[1:]) == tuple(input_shape[:-1])
    ):
        x = x[..., None]
    if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] == 0:
        raise UsageError.expected(
            "data",
            f"{name} of shape (N, {', '.join(str(d) for d in input_shape)}) with N > 0",
            given=f"shape {_fmt_shape(x.shape)}",
        )
    if np.issubdtype(x.dtype, np.complexfloating):
        raise UsageError.expected("data", f"{name} as real numbers", given=f"dtype {x.dtype}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        nans = int(np.isnan(x).sum())
        infs = int(bad.sum()) - nans
        what = ", ".join(
            p for p in (f"{nans} NaN" if nans else "", f"{infs} infinite" if infs else "") if p
        )
        raise UsageError.expected("data", f"finite numbers in {name}", given=f"{what} value(s)")
    return x


def _check_labels(name, y, n, num_classes):
    expected = f"{name} as {n} integer labels in [0, {num_classes})"
    try:
        y = np.asarray(y)
    except Exception:
        raise UsageError.expected("data", expected, given=type(y).__name__) from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise UsageError.expected("data", expected, given=f"shape {_fmt_shape(y.shape)}")
    if (
        y.dtype == bool
        or not np.issubdtype(y.dtype, np.number)
        or np.issubdtype(y.dtype, np.complexfloating)
    ):
        raise UsageError.expected("data", expected, given=f"dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise UsageError.expected("data", expected, given="NaN or infinite labels")
        if not (y == np.round(y)).all():
            raise UsageError.expected("data", expected, given="labels with fractional parts")
    low, high = y.min(), y.max()
    if low < 0 or high >= num_classes:
        outside = int(((y < 0) | (y >= num_classes)).sum())
        raise UsageError.expected(
            "data",
            expected,
            given=f"{outside} label(s) outside it (values from {low:g} to {high:g})",
        )
    return y.astype(np.int64)


def user_data(data, input_shape, num_classes):
    """A Split from what a user gave as `data`: a path to an .npz file, a dict, or a tuple
    (x_train, y_train, x_test, y_test). Checks shapes, finiteness and labels."""
    return checked_split(data_arrays(data), input_shape, num_classes)


def data_arrays(data):
    """The four arrays a user gave as `data` (an .npz path, a dict or a tuple), as given:
    name -> array, unchecked."""
    if isinstance(data, (str, os.PathLike)):
        arrays = _read_npz(data)
    elif isinstance(data, dict):
        missing = [k for k in DATA_KEYS if k not in data]
        if missing:
            raise UsageError.expected(
                "data",
                f"a dict holding {', '.join(DATA_KEYS)}",
                given=f"one without {', '.join(missing)}",
            )
        arrays = {k: data[k] for k in DATA_KEYS}
    elif isinstance(data, (tuple, list)) and len(data) == 4:
        arrays = dict(zip(DATA_KEYS, data))
    else:
        raise UsageError.expected(
            "data",
            "an .npz path or a tuple (x_train, y_train, x_test, y_test)",
            given=type(data).__name__
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""),
        )
    return arrays


def checked_split(arrays, input_shape, num_classes):
    """A Split from data_arrays()'s four arrays: shapes, finiteness and labels checked."""
    x_train = _check_inputs("x_train", arrays["x_train"], input_shape)
    x_test = _check_inputs("x_test", arrays["x_test"], input_shape)
    y_train = _check_labels("y_train", arrays["y_train"], len(x_train), num_classes)
    y_test = _check_labels("y_test", arrays["y_test"], len(x_test), num_classes)
    return Split(x_train, y_train, x_test, y_test, num_classes=num_classes)
