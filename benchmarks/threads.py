"""How many cores a stock Keras fit() of the MNIST CNN keeps busy on each backend, with only
OMP_NUM_THREADS=1 set (as `customfit bench` ran before) and with every framework bound to one
thread (customfit/bench/threads.py: torch's and TensorFlow's pools by their counts, and the
process restricted to one CPU, the only thing that holds XLA's pools; as `customfit bench
--threads 1` now runs).

    .venv/bin/python benchmarks/threads.py [--passes 5] [--steps 20] [--batch-size 128] [--rounds 1]

One process per backend and setting, the settings in turn per backend: after a warm-up pass,
`--passes` timed passes of `--steps` batches through model.fit(); over those passes, CPU time over
wall time (what the process got) and runnable time over wall time (time on a CPU plus time
waiting in the run queue, summed over threads: the cores it would keep busy on an idle machine).
Results: benchmarks/results/threads.json and .md.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BACKENDS = ("tensorflow", "jax", "torch")
SETTINGS = ("OMP_NUM_THREADS=1 only", "bound to 1 thread")


def child(args):
    from customfit.bench import threads

    threads.bind(1 if args.setting == SETTINGS[1] else None)
    process = threads.Clock()
    import keras
    import numpy as np

    from customfit import cpu_memory
    from customfit.bench.stock import StockTrainer
    from customfit.tasks.mnist import spec

    cpu_memory.keep_freed()  # as bench's workers do
    trainer = StockTrainer(spec.MODELS["lecture"], spec.INPUT_SHAPE, spec.NUM_CLASSES, 1e-3, 0)
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.uniform(size=(n, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=n)
    trainer.train_epoch(x, y, args.batch_size, 0, lambda logs: None)  # warm-up: trace, compile
    passes = []
    for i in range(args.passes):
        clock = threads.Clock()
        trainer.train_epoch(x, y, args.batch_size, i + 1, lambda logs: None)
        passes.append(clock.read())
    total = threads.add(passes)
    return {
        "backend": keras.backend.backend(),
        "setting": args.setting,
        "in_effect": threads.in_effect(),
        "passes": passes,
        "timed": {**total, **threads.cores(total)},
        "process": {**(whole := process.read()), **threads.cores(whole)},
        "steps_per_second": args.steps * args.passes / total["wall"],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1, help="each setting this many times")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--markdown", action="store_true", help="rewrite threads.md from .json")
    args = parser.parse_args()
    if args.markdown:  # the table again, from the .json
        record = json.loads((HERE / "results" / "threads.json").read_text())
        (HERE / "results" / "threads.md").write_text(markdown(record))
        return
    if args.setting:
        print("THREADS-RESULT " + json.dumps(child(args)), flush=True)
        return
    sys.path.insert(0, str(ROOT))
    from customfit.bench import threads
    from customfit.runs.results import machine

    started, results = time.strftime("%Y-%m-%d %H:%M:%S %z"), []
    load = [os.getloadavg()[0]]
    for backend in args.backends:
        for _ in range(args.rounds):
            for setting in SETTINGS:
                base = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
                base["OMP_NUM_THREADS"] = "1"
                base["PYTHONPATH"] = str(ROOT)
                env = threads.environment(1 if setting == SETTINGS[1] else None, base)
                command = [sys.executable, __file__, "--setting", setting]
                for flag in ("passes", "steps", "batch_size"):
                    command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
                out = subprocess.run(command, env=env, capture_output=True, text=True)
                lines = [x for x in out.stdout.splitlines() if x.startswith("THREADS-RESULT ")]
                if out.returncode or not lines:
                    sys.exit(f"{backend} / {setting} failed:\n{out.stderr[-3000:]}")
                result = json.loads(lines[-1][len("THREADS-RESULT ") :])
                results.append(result)
                load.append(os.getloadavg()[0])
                t = result["timed"]
                print(
                    f"{backend:10s} {setting:24s} CPU/wall {t['cpu_per_wall']:.2f}  "
                    f"runnable/wall {t['runnable_per_wall']:.2f}  "
                    f"{result['steps_per_second']:.1f} steps/s",
                    flush=True,
                )
    record = {
        "date": started,
        "machine": machine(),
        "load_average_1min": load,
        "what": "stock Keras compile(loss=...)/fit() of the mnist task's CNN (conv 32-64-64, "
        f"dense 64), random 28x28 inputs, batch {args.batch_size}, {args.passes} passes of "
        f"{args.steps} steps after one warm-up pass, per process",
        "results": results,
    }
    out = HERE / "results"
    (out / "threads.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "threads.md").write_text(markdown(record))
    print(markdown(record))


def markdown(record):
    m = record["machine"]
    lines = [
        f"Measured {record['date']} on {m.get('cpu', '?')} ({m.get('cpu_count', '?')} cores), "
        f"1-minute load average {min(record['load_average_1min']):.1f}-"
        f"{max(record['load_average_1min']):.1f} (other jobs on the machine).",
        f"{record['what']}. CPU/wall: what the process got (on a loaded machine, its share of "
        "it); runnable/wall: its threads' time on a CPU plus waiting in the run queue, over wall "
        "time: how many threads were ready to run, on average, which on an idle machine with "
        "enough cores is the cores it would use (held to one CPU, it cannot use more than one: "
        "above 1.00, threads queue for that CPU).",
        "",
        "| backend | setting | CPU/wall | runnable/wall | steps/s | threads in effect |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in record["results"]:
        t, effect = r["timed"], dict(r["in_effect"])
        shown = ", ".join(
            f"{k} {v}" for k, v in effect.items() if k in ("cpus", "torch", "tensorflow")
        )
        lines.append(
            f"| {r['backend']} | {r['setting']} | {t['cpu_per_wall']:.2f} | "
            f"{t['runnable_per_wall']:.2f} | {r['steps_per_second']:.1f} | {shown or '-'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
