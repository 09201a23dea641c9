"""PyTorch tensors to and from the canonical layout (Keras's; customfit/trainers/canonical.py converts), in
groups: a list, or a dict of lists (one per network), whichever a family's canonical weights are.
"""

import numpy as np
import torch

from customfit.trainers import canonical

ENGINE = "torch"


def per_group(function, *groups):
    """function(*lists) for groups that are lists, or {name: function(*lists)} for dicts of lists
    (the first one's names, in its order)."""
    if isinstance(groups[0], dict):
        return {name: function(*(g[name] for g in groups)) for name in groups[0]}
    return function(*groups)


def flat(*groups):
    """The groups' elements side by side, as tuples, every list of a dict in its order."""
    if isinstance(groups[0], dict):
        return [row for name in groups[0] for row in zip(*(g[name] for g in groups))]
    return list(zip(*groups))


def to_canonical(tensors):
    """NumPy copies of `tensors` (a group) in the canonical layout."""
    return per_group(
        lambda group: canonical.to_canonical(ENGINE, [t.detach().cpu().numpy() for t in group]),
        tensors,
    )


def from_canonical(array):
    """A canonical array as a float32 CPU tensor in torch's layout (a copy)."""
    (array,) = canonical.from_canonical(ENGINE, [np.asarray(array, np.float32)])
    return torch.from_numpy(array)
