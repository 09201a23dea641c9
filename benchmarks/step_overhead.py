"""Step overhead: cf.Model's generic step against a hand-written per-backend train_step, on the
toy classifier (the smallest model, where overhead shows most).

    .venv/bin/python benchmarks/step_overhead.py            # all three backends, one process each

For each backend, in one process, the two models are trained alternately (A B A B ...) with the
same data, batch size and compiled step; each run's steps per second is taken over its epochs
after the first (which traces and compiles). The ratio is cf.Model's median over the
hand-written median. Results: benchmarks/results/step_overhead.json and .md.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS, EPOCHS, BATCH = 5, 4, 10


def measure_here():
    import keras
    import numpy as np

    sys.path.insert(0, str(HERE))
    from handwritten_steps import handwritten_model, loss_and_accuracy, network

    import customfit as cf
    from customfit.data import toy_split

    class Toy(cf.Model):
        def __init__(self):
            super().__init__()
            self.network = network()

        def call(self, x, training=False):
            return self.network(x, training=training)

        def objective(self, data, training=True):
            x, y = data
            loss, accuracy = loss_and_accuracy(y, self(x, training=training))
            return {"loss": loss, "accuracy": accuracy}

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    data = toy_split()
    steps = int(np.ceil(len(data.x_train) / BATCH))

    def one_run(make):
        keras.utils.set_random_seed(0)
        model = make()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        clock = EpochClock()
        model.fit(
            data.x_train,
            data.y_train,
            batch_size=BATCH,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[clock],
        )
        return steps / statistics.median(clock.seconds[1:])

    rates = {"cf.Model": [], "hand-written": []}
    for _ in range(RUNS):
        rates["cf.Model"].append(one_run(Toy))
        rates["hand-written"].append(one_run(handwritten_model))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "backend": keras.backend.backend(),
        "steps_per_second": rates,
        "median_steps_per_second": medians,
        "ratio": medians["cf.Model"] / medians["hand-written"],
    }


def main():
    if os.environ.get("CUSTOMFIT_BENCH_CHILD"):
        print(json.dumps(measure_here()))
        return
    results = []
    for backend in ("tensorflow", "torch", "jax"):
        env = dict(
            os.environ, KERAS_BACKEND=backend, CUSTOMFIT_BENCH_CHILD="1", TF_CPP_MIN_LOG_LEVEL="3"
        )
        out = subprocess.run(
            [sys.executable, __file__], env=env, capture_output=True, text=True, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{backend:10s}  cf.Model {result['median_steps_per_second']['cf.Model']:8.0f} steps/s   "
            f"hand-written {result['median_steps_per_second']['hand-written']:8.0f} steps/s   "
            f"ratio {result['ratio']:.3f}",
            flush=True,
        )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'CPU'}, no GPU"
    )
    record = {
        "date": date.today().isoformat(),
        "machine": machine,
        "runs": RUNS,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "results": results,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "step_overhead.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"Measured {record['date']} on {machine}: toy classifier, batch {BATCH}, "
        f"median of {RUNS} runs (epochs 2-{EPOCHS} of each).",
        "",
        "| backend | cf.Model steps/s | hand-written steps/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        m = r["median_steps_per_second"]
        lines.append(
            f"| {r['backend']} | {m['cf.Model']:.0f} | {m['hand-written']:.0f} | {r['ratio']:.3f} |"
        )
    (HERE / "results" / "step_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
