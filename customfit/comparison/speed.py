"""One backend's training speed: fit() itself, in the mode fit() picks from compile()'s settings
(jit_compile="auto": XLA on JAX, a tf.function on TensorFlow, eager on torch), over the batch
repeated, one step per batch. A callback notes when each step's logs are ready (Keras then has
the step's numbers on the host, so the time covers the whole step); the first WARMUP steps
(tracing, compiling) are not counted, and the median step time over the rest is the figure."""

import statistics
import time

import keras
import numpy as np

WARMUP = 3


class StepClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def measure(model, arrays, steps):
    """{"median_seconds", "steps_per_second", "samples_per_second", "batch_size", "steps"}."""
    rows = len(arrays["x"])
    repeated = {k: np.concatenate([a] * (WARMUP + steps + 1)) for k, a in arrays.items()}
    clock = StepClock()
    model.fit(
        repeated["x"],
        repeated.get("y"),
        sample_weight=repeated.get("sample_weight"),
        batch_size=rows,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[clock],
    )
    durations = np.diff(clock.ends)[WARMUP : WARMUP + steps]
    median = float(statistics.median(durations))
    return {
        "batch_size": rows,
        "steps": len(durations),
        "median_seconds": median,
        "steps_per_second": 1.0 / median,
        "samples_per_second": rows / median,
    }
