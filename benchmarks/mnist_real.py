"""Exercise 10's bar on real MNIST: `customfit run mnist` at its defaults (the lecture's CNN, 5
epochs of batch 32, Adam 1e-3) on each engine, one process at a time, reading DATA (an .npz in
Keras's mnist.npz layout, or a folder of MNIST's four IDX files; default: Keras's cached
mnist.npz).

    .venv/bin/python benchmarks/mnist_real.py [--data PATH] [ENGINE ...]   # default: all six

Results: benchmarks/results/mnist_real.json and .md (held-out accuracy on the 10000 test digits,
s/epoch as the mean of epochs 2 onwards, and the whole run's seconds), merged by engine with what
an earlier run of it measured.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from customfit import registry  # noqa: E402
from customfit.tasks.mnist import spec  # noqa: E402
from cli_run import metrics_of_run  # noqa: E402  (beside this script)


def one(engine, data, folder):
    metrics = metrics_of_run("mnist", engine, Path(folder) / engine, "--data", data)
    return {
        "engine": engine,
        **{k: metrics[k] for k in ("accuracy", "passed", "seconds_per_epoch", "total_seconds")},
    }


def write(rows):
    """Results files from `rows`, merged by engine into what an earlier run wrote (each row
    keeps its own date), in the engines' usual order."""
    results = HERE / "results"
    path = results / "mnist_real.json"
    today = date.today().isoformat()
    before = json.loads(path.read_text()) if path.exists() else {"runs": []}
    kept = {r["engine"]: {"date": before.get("date", today), **r} for r in before["runs"]}
    kept.update({r["engine"]: {"date": today, **r} for r in rows})
    ordered = [kept[e] for e in registry.ENGINES if e in kept]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, no GPU"
    result = {"machine": machine, "bar": spec.BARS, "runs": ordered}
    path.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# mnist on real MNIST (60000 training, 10000 held-out digits), {machine}",
        "",
        "Each engine: `customfit run mnist --engine E --data MNIST` at the task's defaults "
        "(the lecture's CNN, 5 epochs of batch 32, Adam 1e-3), one process at a time, "
        "OMP_NUM_THREADS=1, other jobs sharing the machine (so read s/epoch as indicative).",
        "",
        "| engine | date | held-out accuracy (bar >= 0.98) | s/epoch | run, s |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['engine']} | {r['date']} | {r['accuracy']:.4f} | {r['seconds_per_epoch']:.1f} "
        f"| {r['total_seconds']:.0f} |"
        for r in ordered
    ]
    (results / "mnist_real.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: Keras's cached mnist.npz")
    parser.add_argument("engines", nargs="*", default=list(registry.ENGINES))
    args = parser.parse_args()
    data = args.data or spec.default_data()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for engine in args.engines:
            rows.append(one(engine, data, folder))
            print(json.dumps(rows[-1]), flush=True)
            write(rows)  # each engine's row as soon as it is measured
    print(write(rows))


if __name__ == "__main__":
    main()
