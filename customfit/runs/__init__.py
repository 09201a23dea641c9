"""cf.run(task, engine, **config): what `customfit run` does, from Python.

run() reads as the run's steps, each a module, in order:
1. plan.py: everything a user gives, checked before anything is written, into a frozen Plan.
2. launch.py: where the run trains (here; in a subprocess with another Keras backend; in
   processes started the torchrun way; as one of several hosts), its folder held, and this
   process prepared for the engine's framework (the compute device).
3. training.py: the engine's Trainer trains under the run loop with its checkpoints, and
   gives back what was trained (a Trained).
4. results.py: the judge measures it; the run writes, under its folder, metrics.json,
   history.csv, the figures (PNG) and checkpoint.safetensors; a Result comes back.
A run that stops early says where, and how to go on (stops.py, around steps 3 and 4).
"""

import time
from dataclasses import asdict

from customfit.runs import launch, results, training
from customfit.runs.plan import build
from customfit.runs.results import Result
from customfit.runs.stops import stopping

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
    where = launch.where(plan)
    if where == launch.SUBPROCESS:
        return launch.in_subprocess(task, engine, config, plan)
    with launch.folder(plan, where) as plan:
        if where == launch.TORCH_PROCESSES:
            devices = plan.settings["devices"]
            return launch.torch_processes(launched, task, engine, config, devices)
        device = launch.prepare(plan)
        trained = training.train(plan)
        if trained is None:  # a torch process other than rank 0: it trained, rank 0 writes
            return None
        with stopping(plan, trained.paths, trained=True):
            result = results.finish(plan, trained, started, device)
    # Another host wrote into a scratch folder, now gone: process 0 gives the Result.
    return None if where == launch.ANOTHER_HOST else result


def launched(task, engine, config):
    """One launched process: the same run, in the process group; rank 0 returns the Result."""
    result = run(task, engine, **config)
    return None if result is None else asdict(result)
