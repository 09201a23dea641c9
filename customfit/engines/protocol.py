"""What the run loop asks of every engine's Trainer (one class per framework per task family).

The run loop (customfit.engines.loop) owns epochs, progress bars, history, checkpoints and
judging; a Trainer owns its framework: the model, the optimizer, batching in its own idiom.
All arrays crossing this boundary are NumPy; weights are in Keras's layout (customfit.weights).
"""

from typing import Callable, Protocol

import numpy as np


class Trainer(Protocol):
    def __init__(self, layers: tuple, input_shape: tuple, num_classes: int, lr: float, seed: int):
        """Build the model from an architecture description (its weights initialised from `seed`)
        and an Adam optimizer with learning rate `lr`."""

    def train_epoch(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int,
        on_batch: Callable[[dict], None],
    ) -> dict:
        """One pass over (x, y), shuffled by `shuffle_seed` in the framework's own idiom.
        Calls on_batch({"loss": running mean, "accuracy": running mean}) after every batch;
        returns the epoch's means as Python floats."""

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
        """{"loss": mean cross-entropy, "accuracy": fraction correct}, in inference mode."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, num_classes)."""

    def get_weights(self) -> list:
        """The model's weights in Keras's layout, in layer order (kernel, bias, kernel, ...)."""

    def set_weights(self, weights: list) -> None: ...

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple:
        """(mean cross-entropy as float, gradients in Keras's layout) for one batch, no update."""

    def state(self) -> tuple:
        """(arrays, meta): everything a resumed run needs (weights and optimizer state) as a
        flat dict name -> np.ndarray, plus JSON-able meta. No pickled objects."""

    def load_state(self, arrays: dict, meta: dict) -> None: ...
