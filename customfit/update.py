"""cf.Update: one step of a multi-optimizer training step."""

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Update:
    """Minimize `objective` over the trainable variables of `submodel`, with the optimizer
    that `compile(optimizer={name: ...})` gave under `name`, `repeat` times per batch."""

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
            raise ValueError(f"Update {self.name!r}: repeat must be an integer >= 1; got {self.repeat!r}")
