"""The parent side of `customfit bench`: checks the request, starts one worker process per engine
(its Keras backend fixed), shows a line per finished cell, and writes bench.json and bench.md."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from customfit import registry, validate
from customfit.bench import modes
from customfit.bench import threads as threads_module
from customfit.bench.worker import PREFIX, PROCESS_PREFIX, USAGE_PREFIX
from customfit.errors import CustomfitError, UsageError

TASKS = ("toy", "digits", "mnist", "penalty")
DEFAULT_TASKS = ("digits", "mnist", "penalty")
DEFAULT_BATCH_SIZES = (32, 128)
# --precision: the precisions each cell is timed at (customfit/precision.py).
PRECISIONS = {"float32": ("float32",), "mixed": ("mixed",), "both": ("float32", "mixed")}
STANDIN = "mnist-standin.npz"
# --threads: the threads (and CPUs) each engine's process is held to; 0: each framework's own.
DEFAULT_THREADS = 1


def mnist_data(given, out):
    """(path, what it is) for the mnist cells: --data, else Keras's cached MNIST, else a stand-in
    of MNIST's shape written under `out` (throughput does not depend on what the digits show)."""
    from customfit.tasks.mnist import spec, standin

    if given is not None:
        return os.fspath(given), f"{given}"
    path = spec.keras_cache_path()
    if os.path.isfile(path):
        return path, f"MNIST (Keras's {path})"
    target = os.path.join(out, STANDIN)
    standin.write(target, n_train=1200, n_test=100)
    return target, (
        "stand-in of MNIST's shape: scikit-learn digits scaled to 28x28 "
        f"(no {path} on this machine)"
    )


def check(args):
    for task in args.tasks:
        validate.one_of("tasks", task, TASKS)
    for engine in args.engines:
        validate.one_of("engines", engine, registry.ENGINES)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError.expected(
            "out",
            "a folder (or a path where one can be made)",
            given=f"{args.out!r}, which is a file",
        )
    if args.data is not None and "mnist" not in args.tasks:
        raise UsageError.expected(
            "data", "no --data (it is mnist's, and --tasks has no mnist)", given=repr(args.data)
        )
    if args.data is not None:
        from customfit.tasks.mnist import spec

        spec.read_data(args.data)  # a bad file is one line, before anything is written


def run(args):
    check(args)
    made = not os.path.exists(args.out)
    try:
        return _run(args)
    except UsageError:
        # Refused by a worker (--device gpu where its framework sees none): nothing left behind.
        if made:
            shutil.rmtree(args.out, ignore_errors=True)
        raise


def _run(args):
    tasks = list(dict.fromkeys(args.tasks))
    engines = list(dict.fromkeys(args.engines))
    batch_sizes = list(dict.fromkeys(args.batch_sizes))
    data = {}
    os.makedirs(args.out, exist_ok=True)
    notes = {}
    if "mnist" in tasks:
        data["mnist"], notes["mnist"] = mnist_data(args.data, args.out)
    precisions = PRECISIONS[getattr(args, "precision", "float32")]
    threads = getattr(args, "threads", DEFAULT_THREADS) or None
    settings = {
        "threads": threads,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "compiled": args.compiled,
        "tasks": tasks,
        "engines": engines,
        "batch_sizes": batch_sizes,
        "precisions": list(precisions),
        "device": getattr(args, "device", None),
    }
    total = (
        len(tasks)
        * len(batch_sizes)
        * len(precisions)
        * sum(len(modes.chosen(e, args.compiled)) for e in engines)
    )
    print(
        f"bench: {total} cells ({len(engines)} engines, each in its own process); "
        f"{args.steps} steps x {args.repeats} timed repeats after {args.warmup} warm-up pass(es); "
        + threads_said(threads),
        flush=True,
    )
    started, cells, processes = time.time(), [], {}
    for engine in engines:
        found, processes[engine] = _engine(
            engine, tasks, batch_sizes, data, settings, len(cells), total
        )
        cells += found
    from customfit.bench import report
    from customfit.checkpoint import atomic_write
    from customfit.runs.results import machine

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "seconds": time.time() - started,
        "settings": settings,
        "data": notes,
        "threads": threads_record(threads),
        "versions": _versions(),
        "processes": processes,
        "cells": cells,
    }
    atomic_write(os.path.join(args.out, "bench.json"), json.dumps(result, indent=2) + "\n")
    text = report.markdown(result)
    atomic_write(os.path.join(args.out, "bench.md"), text)
    print()
    print(text, end="")
    print(f"wrote {os.path.join(args.out, 'bench.json')} and {os.path.join(args.out, 'bench.md')}")
    failed = [c for c in cells if "error" in c]
    return 1 if failed else 0


def _engine(engine, tasks, batch_sizes, data, settings, done, total):
    request = {
        "engine": engine,
        "cells": [(t, b, p) for t in tasks for b in batch_sizes for p in settings["precisions"]],
        "modes": list(modes.chosen(engine, settings["compiled"])),
        "data": data,
        "device": settings["device"],
        **{k: settings[k] for k in ("steps", "repeats", "warmup", "threads")},
    }
    env = threads_module.environment(settings["threads"])
    env["KERAS_BACKEND"] = registry.KERAS_BACKEND[engine]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cells, process = [], None
    with tempfile.TemporaryDirectory(prefix="customfit-bench-") as tmp:
        path = os.path.join(tmp, "request.json")
        with open(path, "w") as f:
            json.dump(request, f)
        log = os.path.join(tmp, "stderr.log")
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "customfit.bench.worker", path],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
            for line in proc.stdout:
                if line.startswith(USAGE_PREFIX):
                    refused = json.loads(line[len(USAGE_PREFIX) :])
                    proc.wait()
                    raise UsageError(refused["message"], field=refused["field"])
                if line.startswith(PREFIX):
                    cells.append(json.loads(line[len(PREFIX) :]))
                    print(f"[{done + len(cells)}/{total}] {progress_line(cells[-1])}", flush=True)
                if line.startswith(PROCESS_PREFIX):
                    process = json.loads(line[len(PROCESS_PREFIX) :])
                    print(f"{engine} process: {cores_said(process)}", flush=True)
            proc.wait()
        if proc.returncode != 0:
            with open(log) as f:
                tail = [line.strip() for line in f.read().splitlines() if line.strip()]
            raise CustomfitError(
                f"the {engine} bench process ended with status {proc.returncode}: "
                + (tail[-1] if tail else "no message")
            )
    return cells, process


def threads_said(threads):
    if threads is None:
        return "threads: each framework's default"
    return f"{threads} thread{'s' if threads > 1 else ''} per process ({threads} CPU{'s' if threads > 1 else ''})"


def threads_record(threads):
    """What bench.json says of the threads: the count (None: each framework's default), how it is
    held, and the thread counts in the environment bench was started with."""
    return {
        "per_process": threads,
        "how": None
        if threads is None
        else "OMP_NUM_THREADS, MKL/OPENBLAS_NUM_THREADS, TF_NUM_INTRAOP/INTEROP_THREADS, "
        "torch.set_num_threads/set_num_interop_threads, tf.config.threading; each process "
        "restricted to that many CPUs (os.sched_setaffinity), which sizes XLA's pools",
        "environment": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "XLA_FLAGS") if k in os.environ
        },
    }


def cores_said(figures):
    """'0.98 cores (CPU / wall), 1.01 threads runnable' from a record with cpu_per_wall and
    runnable_per_wall."""
    said = (
        "cores (CPU / wall) -"
        if figures.get("cpu_per_wall") is None
        else (f"{figures['cpu_per_wall']:.2f} cores (CPU / wall)")
    )
    if figures.get("runnable_per_wall") is not None:
        said += f", {figures['runnable_per_wall']:.2f} threads runnable (runnable / wall)"
    return said


def progress_line(cell):
    head = (
        f"{cell['task']:<8} {cell['engine']:<17} batch {cell['batch_size']:<4} "
        f"{cell.get('precision', 'float32'):<14} {cell['mode']:<28}"
    )
    if "skipped" in cell:
        return f"{head} skipped: {cell['skipped']}"
    if "error" in cell:
        return f"{head} failed: {cell['error']}"
    line = f"{head} {cell['steps_per_second']:9.1f} steps/s {cell['samples_per_second']:10.0f} samples/s"
    if cell.get("cpu_per_wall") is not None:
        line += f" {cell['cpu_per_wall']:5.2f} cores"
    if "ratio" in cell:
        line += f"  x{cell['ratio']:.3f} of {cell['reference']['name']}"
    return line


def _versions():
    from importlib import metadata

    found = {}
    for name in ("keras", "tensorflow-cpu", "tensorflow", "torch", "jax", "flax", "optax", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
