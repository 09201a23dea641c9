"""One engine's bench cells, in a process of its own (its Keras backend fixed by the parent):

    KERAS_BACKEND=... python -m customfit.bench.worker REQUEST.json

For each (task, batch size): a fresh Trainer per mode, `warmup` untimed passes (tracing and
compiling), then `repeats` timed passes of train_epoch over the same `steps` batches. Beside the
engine's default mode, the reference (stock Keras fit() on this backend; for the penalty task the
hand-written Keras step) is timed in the same process, pass for pass in turn with the engine, so
that a load that comes and goes falls on both. Each finished cell is one line on stdout,
`BENCH-CELL {json}`; the parent reads them as they come, and the last line,
`BENCH-PROCESS {json}`, is the process's own CPU time and runnable time over its wall time
(customfit/bench/threads.py), from before its framework started to its end."""

import json
import os
import statistics
import sys
import time
import traceback

import numpy as np

from customfit import compute_device, cpu_memory, precision, registry
from customfit.bench import modes as modes_module
from customfit.bench import threads
from customfit.errors import UsageError

PREFIX = "BENCH-CELL "
PROCESS_PREFIX = "BENCH-PROCESS "
USAGE_PREFIX = "BENCH-USAGE-ERROR "
LR, SEED = 1e-3, 0
_TORCH_BACKEND = ("torch", "keras-torch")


def _noop(logs):
    pass


def _batches(arrays, steps, batch_size):
    """The first steps * batch_size examples, cycled where the data holds fewer."""
    index = np.arange(steps * batch_size) % len(arrays[0])
    return tuple(a[index] for a in arrays)


def _data(task, data_path, steps, batch_size):
    if task == "penalty":
        from customfit.bench.penalty import ring

        return (ring(steps * batch_size),), None
    spec = registry.spec(task)
    split = spec.read_data(data_path) if task == "mnist" else spec.load()
    return _batches(split.train, steps, batch_size), split


def _trainers(task, engine, split):
    """(make the engine's trainer, (reference name, make the reference) or None)."""
    if task == "penalty":
        from customfit.bench import penalty

        make = {
            "torch": penalty.TorchTrainer,
            "keras-tensorflow": penalty.CfTrainer,
            "keras-torch": penalty.CfTrainer,
            "keras-jax": penalty.CfTrainer,
        }.get(engine)
        if make is None:
            raise NotImplementedError(f"the penalty workload has no {engine} version")
        reference = (
            ("hand-written Keras train_step", penalty.HandwrittenKerasTrainer)
            if engine in _TORCH_BACKEND
            else None
        )
        return make, reference
    spec = registry.spec(task)
    layers = spec.MODELS[spec.DEFAULTS["model"]]
    args = (layers, split.input_shape, split.num_classes, LR, SEED)
    trainer_class = registry.trainer_class(task, engine)

    def stock():
        from customfit.bench.stock import StockTrainer

        return StockTrainer(*args)

    return (lambda: trainer_class(*args)), ("stock Keras fit()", stock)


def _time(trainer, arrays, batch_size, shuffle_seed):
    """One pass: its {"wall", "cpu", "runnable"} seconds (threads.Clock)."""
    clock = threads.Clock()
    trainer.train_epoch(*arrays, batch_size=batch_size, shuffle_seed=shuffle_seed, on_batch=_noop)
    return clock.read()


def _summary(passes, steps, batch_size):
    seconds = [p["wall"] for p in passes]
    median = statistics.median(seconds)
    total = threads.add(passes)
    return {
        "seconds": seconds,
        "median_seconds": median,
        "steps_per_second": steps / median,
        "samples_per_second": steps * batch_size / median,
        # the passes' CPU seconds, and over all of them, cores kept busy (CPU / wall) and threads
        # ready to run (runnable / wall)
        "cpu_seconds": [p["cpu"] for p in passes],
        # per CPU second: on a machine other jobs share, less moved by them than steps/s
        "steps_per_cpu_second": steps / statistics.median(p["cpu"] for p in passes)
        if all(p["cpu"] > 0 for p in passes)
        else None,
        **threads.cores(total),
    }


def run_cell(head, mode, arrays, make, reference, job):
    """One cell: `head` (task, engine, batch size, precision, device, ...) in one mode, timed."""
    engine, batch_size = head["engine"], head["batch_size"]
    steps, repeats, warmup = job["steps"], job["repeats"], job["warmup"]
    trainer = make()
    cell = {
        **head,
        "mode": mode,
        "default_mode": mode == modes_module.DEFAULT[engine],
        "steps": steps,
        "repeats": repeats,
        "warmup": warmup,
    }
    with modes_module.applied(engine, mode, trainer):
        started = time.perf_counter()
        for i in range(warmup):
            _time(trainer, arrays, batch_size, 1000 + i)
        cell["warmup_seconds"] = time.perf_counter() - started
        other = None
        if reference is not None and cell["default_mode"]:
            other = reference[1]()
            for i in range(warmup):
                _time(other, arrays, batch_size, 1000 + i)
        mine, theirs = [], []
        for r in range(repeats):
            # A pair of passes in turn, the order alternating, so that neither side always runs
            # first (right after the other's pass) and a load that comes and goes falls on both.
            if other is not None and r % 2:
                theirs.append(_time(other, arrays, batch_size, r))
            mine.append(_time(trainer, arrays, batch_size, r))
            if other is not None and not r % 2:
                theirs.append(_time(other, arrays, batch_size, r))
    cell.update(_summary(mine, steps, batch_size))
    if other is not None:
        cell["reference"] = {"name": reference[0], **_summary(theirs, steps, batch_size)}
        # The median of the pairs' ratios: each pair ran under the same conditions, so a slow
        # stretch of the machine cancels within its pair (the ratio of the two medians, which
        # does not pair them, is kept beside it).
        cell["ratio"] = statistics.median(t["wall"] / m["wall"] for m, t in zip(mine, theirs))
        # the same of CPU seconds: with the process held to one CPU, the work of each pass, which
        # other jobs on the machine move less than its wall time
        if all(m["cpu"] > 0 for m in mine):
            cell["cpu_ratio"] = statistics.median(t["cpu"] / m["cpu"] for m, t in zip(mine, theirs))
        cell["ratio_of_medians"] = cell["steps_per_second"] / cell["reference"]["steps_per_second"]
    return cell


def main(request_path):
    with open(request_path) as f:
        job = json.load(f)
    engine = job["engine"]
    # Before the framework starts: its pools sized and the process held to --threads CPUs.
    cpus = threads.bind(job.get("threads"), registry.KERAS_BACKEND[engine])
    clock = threads.Clock()
    # Before the framework starts: --device cpu hides the GPUs from it.
    try:
        device = compute_device.use(None, engine, job.get("device"))
    except UsageError as e:  # --device gpu without one: the parent says it in one line
        print(USAGE_PREFIX + json.dumps({"field": e.field, "message": e.message}), flush=True)
        return 2
    kept = cpu_memory.keep_freed()  # as `customfit run` trains: the torch engines gain most
    for task, batch_size, wanted in job["cells"]:
        # Before any Trainer of the cell is made: Keras's dtype policy applies to new layers.
        policy = precision.use(engine, wanted)
        head = {
            "task": task,
            "engine": engine,
            "batch_size": batch_size,
            "precision": policy,
            "device": device,
            "freed_memory_kept": kept,
        }
        try:
            if task == "penalty" and engine == "torch" and policy != "float32":
                raise NotImplementedError(
                    "the penalty workload's torch version has no mixed precision"
                )
            arrays, split = _data(task, job["data"].get(task), job["steps"], batch_size)
            make, reference = _trainers(task, engine, split)
        except NotImplementedError as e:
            for mode in job["modes"]:
                _emit({**head, "mode": mode, "skipped": str(e)})
            continue
        for mode in job["modes"]:
            try:
                cell = run_cell(head, mode, arrays, make, reference, job)
            except Exception as e:  # one cell's failure (a mode a step cannot take) is its row
                traceback.print_exc(file=sys.stderr)
                cell = {
                    **head,
                    "mode": mode,
                    "error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                }
            _emit(cell)
    whole = clock.read()
    process = {**whole, **threads.cores(whole), "cpus": cpus, "in_effect": threads.in_effect()}
    print(PROCESS_PREFIX + json.dumps({"engine": engine, **process}), flush=True)
    return 0


def _emit(cell):
    print(PREFIX + json.dumps(cell), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1]))
