"""cf.Update: one step of a multi-optimizer training step."""

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Update:
    """One update of a step: minimize `objective` over `submodel`'s trainable variables.

    Returned by `cf.Model.updates()`; the updates run in order, once per batch each (`repeat`
    times). Variables outside `submodel` are not changed by this update, though its objective
    may use them (a generator's objective calls the critic).

    Args:
        name: the optimizer's key in `compile(optimizer={name: ...})`; also the prefix of the
            update's logged loss (`<name>_loss`).
        objective: a function `(data, training=True)` returning a scalar or a dict holding
            "loss", as `cf.Model.objective` does (typically a bound method of the model).
        submodel: the layer or model whose trainable variables this update trains (a part of
            the cf.Model, or the model itself).
        repeat: how many times per batch it runs (an integer >= 1).

    Returns:
        An immutable record; `cf.Model` checks it when fit() first runs.

    Example:
        ```python
        cf.Update("critic", self.critic_objective, self.critic, repeat=5)
        ```
    """

    name: str
    objective: Callable[..., Any]
    submodel: Any
    repeat: int = 1

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Update name must be a non-empty string; got {self.name!r}")
        if not callable(self.objective):
            raise ValueError(
                f"Update {self.name!r}: objective must be callable; got {type(self.objective).__name__}"
            )
        if not isinstance(self.repeat, int) or self.repeat < 1:
            raise ValueError(
                f"Update {self.name!r}: repeat must be an integer >= 1; got {self.repeat!r}"
            )
