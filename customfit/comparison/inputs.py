"""What `customfit compare` is given, checked before any backend starts: the factory's file and
name, the batch's arrays, the backends. Imports NumPy only (no framework), so that a mistake costs
no framework's start-up; each one is a one-line UsageError."""

import ast
import os
from dataclasses import dataclass

import numpy as np

from customfit import registry
from customfit.errors import UsageError

BACKENDS = ("tensorflow", "torch", "jax")
# fit()'s arguments, in the order fit() packs them into a batch.
ARRAY_NAMES = ("x", "y", "sample_weight")


@dataclass(frozen=True)
class Target:
    """FILE.py:FACTORY: the file (absolute) and the name of the function in it."""

    path: str
    factory: str


def target(text):
    expected = "FILE.py:FACTORY, a Python file and a function in it returning a cf.Model"
    path, sep, name = str(text).rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise UsageError.expected("target", expected, text)
    if not os.path.isfile(path):
        raise UsageError.expected("target", expected, given=f"{path!r}, which does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as e:
        raise UsageError.expected(
            "target", expected, given=f"{path!r}, which cannot be read as Python ({e})"
        ) from None
    if name not in top_level_names(tree):
        raise UsageError.expected(
            "target", expected, given=f"{path!r}, which defines no {name!r} at its top level"
        )
    return Target(os.path.abspath(path), name)


def top_level_names(tree):
    """The names a module binds at its top level (functions, classes, assignments, imports)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def batch(path):
    """{name: array} from BATCH.npz: x, and y and sample_weight where given, one row per example."""
    expected = (
        f"an .npz file holding the arrays fit() would get: {', '.join(ARRAY_NAMES)} (x at least)"
    )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError.expected("data", expected, given=f"{path!r}, which does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single array")
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # a damaged zip, pickled objects, a plain .npy ...
        raise UsageError.expected(
            "data", expected, given=f"{path!r}, which cannot be read ({' '.join(str(e).split())})"
        ) from None
    others = sorted(set(arrays) - set(ARRAY_NAMES))
    if "x" not in arrays or others:
        raise UsageError.expected(
            "data",
            expected,
            given=f"{path!r}, which holds {', '.join(sorted(arrays)) or 'nothing'}",
        )
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf" or array.ndim == 0:
            raise UsageError.expected(
                "data",
                f"{name} a numeric array with one row per example",
                given=f"{array.dtype} of shape {array.shape}",
            )
    rows = {name: len(a) for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise UsageError.expected(
            "data",
            "arrays with as many rows as x",
            given=", ".join(f"{n} {r} rows" for n, r in rows.items()),
        )
    if rows["x"] == 0:
        raise UsageError.expected("data", "at least one example", given="x with 0 rows")
    return {name: arrays[name] for name in ARRAY_NAMES if name in arrays}


def backends(names):
    names = list(names)
    if not names:
        raise UsageError.expected("backends", f"one or more of {', '.join(BACKENDS)}", names)
    for name in names:
        if name not in BACKENDS:
            raise UsageError.expected("backends", f"one of {', '.join(BACKENDS)}", name)
        # The keras-<backend> engine needs exactly the backend's framework.
        missing = registry.missing_modules(f"keras-{name}")
        if missing:
            extra = registry.EXTRA[f"keras-{name}"]
            raise UsageError.expected(
                "backends",
                f"a backend whose framework is installed (pip install 'customfit[{extra}]')",
                given=f"{name!r} without {' and '.join(missing)} installed",
            )
    if len(set(names)) != len(names):
        raise UsageError.expected("backends", "each backend once", " ".join(names))
    return names
