"""The comparison: every number of every backend against the float64 reference, or, where that
could not be computed, against every other backend. A difference is relative to the largest
entry of the same array on any backend (the reference included): for a gradient, that variable's
largest gradient entry, so that entries near zero do not count as differences of their own; and
at least GRADIENT_FLOOR of the largest gradient entry of the whole update, so that a variable
whose gradient is zero in exact arithmetic (an attention layer's key bias: softmax ignores a shift
common to every key) shows its rounding noise as the small difference it is, not as noise over
noise. A variable with a real gradient that small is still held to it: a gradient twice too
large there differs by at least GRADIENT_FLOOR."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Worst:
    """The largest difference one backend shows: where, and the values there on every side."""

    relative: float = 0.0
    key: str = None
    index: tuple = ()
    values: dict = field(default_factory=dict)

    @property
    def where(self):
        if self.key is None:
            return "nothing"
        update, kind, name = self.key.split("/", 2)
        index = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        # The lone default update is the objective itself; several are named.
        whose = "the objective" if update == "loss" else f"update {update}"
        if kind == "gradient":
            return f"the gradient of {whose}'s loss w.r.t. {name}{index}"
        return f"{whose}'s {name}{index} (training {'on' if kind == 'training' else 'off'})"


def _relative(mine, theirs, scale):
    """(largest |mine - theirs| / scale, its index). The same NaN or infinity on both sides is
    no difference; a NaN or infinity on one side only is an infinite one."""
    if mine.shape != theirs.shape:
        return float("inf"), ()
    if mine.size == 0:
        return 0.0, ()
    same = (mine == theirs) | (np.isnan(mine) & np.isnan(theirs))
    with np.errstate(invalid="ignore"):
        gap = np.where(same, 0.0, np.abs(mine - theirs))
    gap = np.where(np.isnan(gap), np.inf, gap)
    flat = int(np.argmax(gap))
    index = tuple(int(i) for i in np.unravel_index(flat, gap.shape))
    return float(gap.reshape(-1)[flat]) / scale, index


GRADIENT_FLOOR = 1e-3


def _update_scales(sides, keys):
    """{update: the largest |entry| of any of its gradients on any side}."""
    scales = {}
    for key in keys:
        update, kind, _ = key.split("/", 2)
        if kind == "gradient":
            largest = _largest([found.get(key) for found in sides.values()])
            scales[update] = max(scales.get(update, 0.0), largest)
    return scales


def _largest(arrays):
    """The largest finite |entry| of an array on any side (0 where there is none)."""
    finite = [np.abs(a[np.isfinite(a)]) for a in arrays if a is not None]
    return max((float(f.max()) for f in finite if f.size), default=0.0)


def _scale(arrays):
    """The largest finite |entry| of an array on any side (1 where there is none)."""
    return _largest(arrays) or 1.0


def compare(numbers, reference=None):
    """numbers: {backend: {key: array}}; reference: {key: array} or None (then pairwise).
    Returns ({backend: Worst}, {key: {backend: relative}})."""
    sides = {**numbers, **({"float64": reference} if reference is not None else {})}
    keys = sorted({k for found in sides.values() for k in found})
    update_scales = _update_scales(sides, keys)
    worst = {b: Worst() for b in numbers}
    table = {}
    for key in keys:
        arrays = {s: found.get(key) for s, found in sides.items()}
        scale = _scale(arrays.values())
        update, kind, _ = key.split("/", 2)
        if kind == "gradient":
            scale = max(scale, GRADIENT_FLOOR * update_scales[update])
        table[key] = {}
        for backend in numbers:
            mine = arrays[backend]
            against = (
                [arrays["float64"]]
                if reference is not None
                else [arrays[b] for b in numbers if b != backend]
            )
            found = [
                (float("inf"), ())
                if mine is None or other is None
                else _relative(mine, other, scale)
                for other in against
            ]
            relative, index = max(found, default=(0.0, ()), key=lambda f: f[0])
            table[key][backend] = relative
            if relative > worst[backend].relative:
                worst[backend] = Worst(relative, key, index, _values_at(arrays, index))
    return worst, table


def _values_at(arrays, index):
    return {
        side: None if a is None or a.ndim != len(index) else float(a[index])
        for side, a in arrays.items()
    }
