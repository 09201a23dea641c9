"""cf.run(task, engine, **config): what `customfit run` does, from Python.

Everything a user gives is checked before anything is written (plan.py). Then the run trains
where it must (launch.py): here, in a subprocess with another Keras backend, in processes
started the torchrun way, or as one of several hosts; the engine's Trainer trains under the run
loop with its checkpoints (training.py); the judge measures the result and the run writes,
under its folder, metrics.json, history.csv, the figures (PNG) and checkpoint.safetensors
(results.py). A run that stops early says where, and how to go on (stops.py).
"""

import os
import time
from dataclasses import asdict

from customfit import devices as spreading
from customfit import hosts, run_folder
from customfit.runs import launch
from customfit.runs.plan import build
from customfit.runs.results import Result

__all__ = ["Result", "run"]


def run(task, engine, **config):
    """Train a task on an engine, judge it and write its results: `customfit run`, from Python.

    Everything given is checked before anything is written. A Keras backend is fixed per
    process: when Keras is already imported here with another backend than the engine needs,
    the run happens in a subprocess and its Result is read back.

    Args:
        task: one of the tasks `customfit list` shows ("toy", "digits", "adversarial", ...).
        engine: "tensorflow", "torch", "flax", "keras-tensorflow", "keras-torch" or
            "keras-jax"; its framework must be installed (the extra `customfit[...]`).
        **config: epochs, batch_size, lr, seed, model (defaults: the task's); out (the folder,
            default `runs/<task>-<engine>`); resume (continue from out/checkpoint.safetensors);
            data (an .npz path, or a tuple (x_train, y_train, x_test, y_test)); verbose;
            devices (train on N devices, each engine its framework's way; batch_size is then
            the global batch); precision ("float32", the default, or "mixed": float32
            weights, 16-bit compute, see customfit/precision.py); device ("cpu" or "gpu";
            default: the GPU where the engine's framework sees one); and the task's own options
            (e.g. method, eps, steps for adversarial).

    Returns:
        A `cf.Result` (None in a process that torchrun started, other than rank 0, and in a
        process other than process 0 of a run across hosts: TF_CONFIG, KERAS_DISTRIBUTION_*).

    Raises:
        customfit.errors.UsageError: a mistake in what was given (one line: what was expected,
            what was given); nothing is written.

    Example:
        ```python
        result = cf.run("digits", "torch", epochs=5, out="runs/digits-torch")
        print(result.metrics["accuracy"], result.passed)
        ```
    """
    started = time.perf_counter()
    plan = build(task, engine, config)
    devices = plan.settings.get("devices", 1)
    if launch.needs_subprocess(engine) or spreading.needs_fresh_process(engine, devices):
        return launch.in_subprocess(task, engine, config, plan)
    if devices > 1 and spreading.launched_world() is not None:
        # One of several torch processes: customfit's own launching process holds the folder
        # for them all; under torchrun (one host or several), global rank 0 holds it.
        if os.environ.get(spreading.LAUNCHED_HERE) or os.environ.get("RANK") != "0":
            return launch.train_here(plan, started)
        with run_folder.hold(plan.out, what=f"customfit run {task} --engine {engine}"):
            return launch.train_here(plan, started)
    cluster = hosts.of(engine)
    if cluster is not None and cluster.index > 0:
        return launch.train_on_another_host(plan, started)
    # Made (or refused: --out /proc/x, a folder another run holds) before any framework loads.
    with run_folder.hold(plan.out, what=f"customfit run {task} --engine {engine}"):
        if devices > 1 and engine in spreading.TORCH_ENGINES:
            return launch.torch_processes(launched, task, engine, config, devices)
        return launch.train_here(plan, started)


def launched(task, engine, config):
    """One launched process: the same run, in the process group; rank 0 returns the Result."""
    result = run(task, engine, **config)
    return None if result is None else asdict(result)
