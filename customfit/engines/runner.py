"""cf.run(task, engine, **config): what `customfit run` does, from Python.

Everything a user gives is checked before anything is written: a mistake raises UsageError (one
line) and leaves the output folder as it was. Then the engine's Trainer trains under the run loop
(customfit.engines.loop), the judge measures the result, and the run writes, under its folder:
metrics.json, history.csv, the figures (PNG) and checkpoint.safetensors.

A Keras backend is fixed per process. run() sets KERAS_BACKEND for its engine before Keras is
imported; if Keras is already imported here with another backend, the job runs in a subprocess
(`python -m customfit.engines.runner REQUEST.json`) and its Result is read back.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from customfit import devices as spreading
from customfit import hosts
from customfit import compute_device, cpu_memory, options, precision, registry, run_folder, validate
from customfit.errors import (CheckpointError, CustomfitError, Interrupted, NonFiniteLoss,
                              RunStopped, UsageError, WriteError)

CONFIG_KEYS = ("epochs", "batch_size", "lr", "seed", "model", "out", "resume", "data", "verbose",
               "tensorboard", "devices", "precision", "device")
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
HISTORY = "history.csv"
# On resume these must match the checkpoint (they decide the numbers); epochs may grow.
_PINNED = ("batch_size", "lr", "seed")


@dataclass
class Result:
    """What a run gives back: `cf.run` returns one (metrics.json holds the same and more).

    Attributes:
        task, engine: what ran.
        config: the settings it ran with (epochs, batch_size, lr, seed, model, data and the
            task's own options).
        metrics: the judge's figures, e.g. {"accuracy": 0.995, "loss": 0.02}.
        bars: the figures the task must reach, e.g. {"accuracy": 0.99} (a minimum) or
            {"fd": ("<=", 7.32)} (a maximum).
        passed: whether every bar was reached.
        history: one dict per epoch (epoch, the engine's figures, their val_ twins, seconds).
        paths: what was written, name -> path (metrics, history, checkpoint, figures).
        out_dir: the run's folder.
        seconds_per_epoch: the mean of epochs 2 onwards (the first includes compiling).
        total_seconds: the whole run's time.
        resumed_from_epoch: the epoch a resumed run continued after, else None.
        references: the judge's figures for what to compare with, name -> figures
            (generative tasks: real digits, a pixel Gaussian, the lecture's model).
        versions: Python's, NumPy's, customfit's and the engine's frameworks' versions.
        started_from: the run folder whose trained model this run started from
            (adversarial's `from_run`), else None.
        precision: the dtype policy the run computed in: "float32", "mixed_bfloat16" or
            "mixed_float16" (customfit/precision.py).
        device: where it computed, "cpu" or "gpu" (customfit/compute_device.py).
        accuracy: metrics["accuracy"], or None for a task judged otherwise.

    Example:
        ```python
        result = cf.run("toy", "keras-jax", epochs=5)
        result.metrics["accuracy"], result.passed, result.paths["metrics"]
        ```
    """

    task: str
    engine: str
    config: dict
    metrics: dict
    bars: dict
    passed: bool
    history: list
    paths: dict
    out_dir: str
    seconds_per_epoch: float
    total_seconds: float
    resumed_from_epoch: int | None = None
    references: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    started_from: str | None = None
    precision: str = "float32"
    device: str = "cpu"

    @property
    def accuracy(self):
        return self.metrics.get("accuracy")


# ----------------------------------------------------------------------------- checking


def _plan(task, engine, config):
    """Check everything a user gave, load the data and (on resume) the checkpoint, decide every
    setting. Writes nothing. Returns a dict that _train() carries out."""
    validate.one_of("task", task, registry.TASKS)
    validate.one_of("engine", engine, registry.ENGINES)
    validate.installed_engine("engine", engine)
    spec = registry.spec(task)
    option_names = tuple(getattr(spec, "OPTIONS", {}))
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(option_names) - {"_data_label"})
    if unknown:
        if unknown[0] in registry.all_option_names():
            options.resolve(spec, {unknown[0]: config[unknown[0]]})  # names the task's own options
        raise UsageError.expected("config", f"keys among {', '.join(CONFIG_KEYS + option_names)}",
                                  unknown[0])
    given = {k: v for k, v in config.items() if v is not None}

    model = given.get("model", spec.DEFAULTS["model"])
    validate.one_of("model", model, tuple(spec.MODELS), f"(for task {task})")
    checked = {}
    if "epochs" in given:
        checked["epochs"] = validate.positive_int("epochs", given["epochs"])
    if "batch_size" in given:
        checked["batch_size"] = validate.positive_int("batch_size", given["batch_size"])
    if "lr" in given:
        checked["lr"] = validate.positive_float("lr", given["lr"])
    if "seed" in given:
        checked["seed"] = validate.seed("seed", given["seed"])
    if "precision" in given:
        checked["precision"] = precision.check(given["precision"])
    device = compute_device.check(given.get("device"))
    task_options = options.resolve(spec, {k: given.get(k) for k in option_names})
    defaults = registry.defaults(spec, model, task_options)
    options_given = {k for k in option_names if k in given}

    out = _writable_folder("out", given.get("out", os.path.join("runs", f"{task}-{engine}")))
    tensorboard = given.get("tensorboard")
    if tensorboard is not None:
        tensorboard = _writable_folder("tensorboard", tensorboard)

    data = given.get("data")
    if data is None and hasattr(spec, "default_data"):
        data = spec.default_data()  # data kept outside the package (mnist: Keras's cache), or one line
    if data is not None:
        input_shape, num_classes = validate.task_shapes(spec)
        read = getattr(spec, "read_data", None)  # a task with its own file layout (mnist's uint8)
        split = read(data) if read else validate.user_data(data, input_shape, num_classes)
        data_label = os.fspath(data) if isinstance(data, (str, os.PathLike)) else "arrays"
        data_label = given.get("_data_label", data_label)
        data_digest = _split_digest(split)
    else:
        split, data_label, data_digest = None, "built-in", None

    resume = bool(given.get("resume", False))
    resumed = start = None
    if resume:
        pinned_options = tuple(k for k in option_names if spec.OPTIONS[k].pinned)
        resumed = _check_checkpoint(os.path.join(out, CHECKPOINT), task, engine, model,
                                    {**checked, **{k: task_options[k] for k in options_given}},
                                    data_digest, pinned_options)
        previous = resumed[1]["config"]
        for key in ("epochs",) + _PINNED:
            checked.setdefault(key, previous[key])
        checked.setdefault("precision", previous.get("precision", precision.DEFAULT))
        for key in option_names:  # the run goes on as it started, pinned or not
            if key not in options_given and key in previous:
                task_options[key] = previous[key]
        done = resumed[1]["epoch"]
        if checked["epochs"] < done:
            raise UsageError.expected(
                "epochs", f"at least {done} (the checkpoint has trained {done} epochs)", checked["epochs"])
    elif hasattr(spec, "start_from"):
        # A task that starts from another run's trained model (adversarial: a digits run) takes
        # that run's training settings with its weights.
        start = spec.start_from(task_options, engine)
        if start is not None:
            source = start[1]["config"]
            for key in ("epochs",) + _PINNED:
                if key in checked and checked[key] != source[key]:
                    raise UsageError.expected(
                        key, f"{source[key]!r} as in the run it starts from (or leave "
                             f"--{key.replace('_', '-')} out)", checked[key])
                checked[key] = source[key]
            if start[1].get("data_sha256") != data_digest:
                raise UsageError.expected("data", "the data the run it starts from was trained on",
                                          given="other data")

    settings = {**{k: defaults[k] for k in ("epochs", "batch_size", "lr", "seed")},
                **{k: v for k, v in checked.items() if k != "precision"}}
    settings = {
        "epochs": int(settings["epochs"]),
        "batch_size": int(settings["batch_size"]),
        "lr": float(settings["lr"]),
        "seed": int(settings["seed"]),
        "model": model,
        "data": data_label,
        **task_options,
    }
    # Several devices train as one does (customfit/devices.py): the config records them, but a
    # resumed run may take another count.
    devices = spreading.check(task, engine, given.get("devices", 1), settings["batch_size"])
    if devices > 1:
        settings["devices"] = devices
    # Like devices: only a run that asks for it records it, so float32 configs stay as they were.
    if checked.get("precision", precision.DEFAULT) != precision.DEFAULT:
        settings["precision"] = checked["precision"]
    return {
        "task": task, "engine": engine, "spec": spec, "settings": settings, "split": split,
        "data_digest": data_digest, "out": out, "resumed": resumed, "start": start,
        "verbose": bool(given.get("verbose", True)),
        "data_given": data,
        "tensorboard": tensorboard,
        "device_wanted": device,
    }


def _writable_folder(field, path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise UsageError.expected(field, "a folder's path", path)
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError.expected(field, "a folder (or a path where one can be made)",
                                  given=f"{path!r}, which is a file")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError.expected(field, "a folder that can be written", given=repr(path))
    return path


def _split_digest(split):
    import hashlib

    h = hashlib.sha256()
    for a in (split.x_train, split.y_train, split.x_test, split.y_test):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check_checkpoint(path, task, engine, model, checked, data_digest, pinned_options=()):
    from customfit import checkpoint

    if not os.path.exists(path):
        raise CheckpointError.expected("resume", "a checkpoint to resume from",
                                       given=f"no file {path} (run once without --resume)")
    try:
        arrays, meta = checkpoint.load(path)
    except CheckpointError as e:
        e.field = "resume"
        raise
    want = {"task": task, "engine": engine, "model": model}
    for key, value in want.items():
        if meta.get(key) != value:
            raise CheckpointError.expected(
                "resume", f"a checkpoint of task {task}, engine {engine}, model {model}",
                given=f"{path}, written by task {meta.get('task')}, engine {meta.get('engine')}, "
                      f"model {meta.get('model')}")
    config, epoch, history = meta.get("config"), meta.get("epoch"), meta.get("history")
    pinned = _PINNED + tuple(pinned_options)
    if (not isinstance(config, dict) or not all(k in config for k in ("epochs",) + pinned)
            or not isinstance(epoch, int) or not isinstance(history, list) or len(history) != epoch):
        raise CheckpointError.expected("resume", "a customfit run checkpoint",
                                       given=f"{path}, whose run metadata is incomplete")
    stopped = meta.get("stopped") or {}
    for key in pinned:
        if key == "lr" and stopped.get("why") in ("nonfinite", "diverged"):
            continue  # the run diverged: it may go on at another learning rate
        if key in checked and checked[key] != config[key]:
            flag = "--" + key.replace("_", "-")
            raise UsageError.expected(
                key, f"{config[key]!r} as in the checkpoint being resumed (or leave {flag} out)",
                checked[key])
    # Pinned too, but absent from the configs of float32 runs (and of runs older than it).
    was = config.get("precision", precision.DEFAULT)
    if checked.get("precision", was) != was:
        raise UsageError.expected(
            "precision", f"{was!r} as in the checkpoint being resumed (or leave --precision out)",
            checked["precision"])
    if meta.get("data_sha256") != data_digest:
        want_data = "the data it was trained on" if meta.get("data_sha256") else "the built-in data"
        raise UsageError.expected("data", f"{want_data} to resume this checkpoint",
                                  given="other data" if data_digest else "the built-in data")
    return arrays, meta


# ----------------------------------------------------------------------------- backends


def _keras_backend_in_process():
    """The backend of the Keras already imported here, or None if Keras is not imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return keras.backend.backend()
    except Exception:
        return os.environ.get("KERAS_BACKEND", "tensorflow")


def needs_subprocess(engine):
    """True when Keras is already imported in this process with a backend other than the one
    this engine needs (a Keras backend cannot change inside a process)."""
    current = _keras_backend_in_process()
    return current is not None and current != registry.KERAS_BACKEND[engine]


# ----------------------------------------------------------------------------- running


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
    plan = _plan(task, engine, config)
    devices = plan["settings"].get("devices", 1)
    if needs_subprocess(engine) or spreading.needs_fresh_process(engine, devices):
        return _run_in_subprocess(task, engine, config, plan)
    if devices > 1 and spreading.launched_world() is not None:
        # One of several torch processes: customfit's own launching process holds the folder
        # for them all; under torchrun (one host or several), global rank 0 holds it.
        if os.environ.get(spreading.LAUNCHED_HERE) or os.environ.get("RANK") != "0":
            return _train_here(plan, started)
        with run_folder.hold(plan["out"], what=f"customfit run {task} --engine {engine}"):
            return _train_here(plan, started)
    cluster = hosts.of(engine)
    if cluster is not None and cluster.index > 0:
        return _train_on_another_host(plan, started)
    # Made (or refused: --out /proc/x, a folder another run holds) before any framework loads.
    with run_folder.hold(plan["out"], what=f"customfit run {task} --engine {engine}"):
        if devices > 1 and engine in spreading.TORCH_ENGINES:
            return _launch(task, engine, config, devices)
        return _train_here(plan, started)


def _train_here(plan, started):
    engine, devices = plan["engine"], plan["settings"].get("devices", 1)
    os.environ["KERAS_BACKEND"] = registry.KERAS_BACKEND[engine]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines drown the bar
    spreading.prepare(engine, devices)
    # Before the framework starts: --device cpu hides the GPUs from it.
    compute_device.hide_if_asked(engine, plan["device_wanted"])
    cluster = hosts.of(engine)
    if cluster is not None and engine in spreading.JAX_ENGINES:
        from customfit.parallel import coordinator

        # Before anything asks JAX for its devices (choosing the device below does): JAX's
        # coordinator must be joined before its backends start.
        coordinator.join(engine, cluster)
    plan["device"] = compute_device.use(plan["task"], engine, plan["device_wanted"], devices)
    cpu_memory.keep_freed()  # the torch engines' steps stop page-faulting their tensors in
    return _train(plan, started)


def _train_on_another_host(plan, started):
    """A process other than process 0 of a run across hosts (customfit/hosts.py): it trains,
    judges and writes as process 0 does, since every collective needs every process, but into
    a scratch folder that goes when the run ends (as TensorFlow's guide to checkpoints under
    MultiWorkerMirroredStrategy has the other workers do). Returns None."""
    with tempfile.TemporaryDirectory(prefix="customfit-host-") as scratch:
        _train_here(dict(plan, out=scratch, verbose=False, tensorboard=None), started)
    return None


def _launch(task, engine, config, devices):
    """The run in `devices` processes started the torchrun way; rank 0's Result."""
    from customfit.parallel import process_group

    try:
        results = process_group.launch(_launched, (task, engine, config), devices)
    except Exception as e:  # a worker failed: its traceback is above, on stderr
        raise CustomfitError(f"a {engine} process of {devices} failed "
                             f"({' '.join(str(e).split())[:200]})") from None
    return Result(**results[0])


def _launched(task, engine, config):
    """One launched process: the same run, in the process group; rank 0 returns the Result."""
    result = run(task, engine, **config)
    return None if result is None else asdict(result)


def _train(plan, started):
    from customfit import checkpoint
    from customfit.engines import loop

    task, engine, spec, settings = plan["task"], plan["engine"], plan["spec"], plan["settings"]
    split, out = plan["split"] or spec.load(), plan["out"]
    # One of several torch processes: all train, rank 0 alone writes and judges.
    grouped = settings.get("devices", 1) > 1 and engine in spreading.TORCH_ENGINES
    writes = True
    if grouped:
        from customfit.parallel import process_group

        writes = process_group.join()[0] == 0
    try:
        trainer_class = registry.trainer_class(task, engine)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("customfit."):
            raise CustomfitError(f"engine {engine} is not implemented for task {task} yet ({e.name})") from None
        raise
    # Before the Trainer builds its layers: Keras's dtype policy applies to layers made after it.
    plan["policy"] = precision.use(engine, settings.get("precision", precision.DEFAULT))
    trainer = spec.build_trainer(trainer_class, split, settings)
    history, resumed_from, started_from = [], None, None
    source = plan["resumed"] or plan["start"]
    if source is not None:
        arrays, meta = source
        try:
            history = loop.restore(trainer, arrays, meta)
        except Exception as e:
            field = "resume" if plan["resumed"] is not None else "from_run"
            raise CheckpointError.expected(
                field, f"a checkpoint whose state fits the {engine} trainer",
                given=f"one it refuses ({' '.join(str(e).split())[:100]})") from None
        if plan["resumed"] is not None:
            resumed_from = meta["epoch"]
        else:
            started_from = settings.get("from_run")
    trained_before = len(history)

    paths = {
        "checkpoint": os.path.join(out, CHECKPOINT),
        "history": os.path.join(out, HISTORY),
        "metrics": os.path.join(out, METRICS),
    }

    def write_history(rows):
        checkpoint.atomic_write(paths["history"], loop.history_csv(rows))

    after_epoch = getattr(spec, "after_epoch", None)
    board = None
    if plan["tensorboard"] is not None and writes:  # rank 0 alone, as for every file
        from customfit.engines import event_logs

        board = event_logs.open_writer(engine, plan["tensorboard"], trainer)
        paths["tensorboard"] = plan["tensorboard"]

    def on_epoch_end(rows):
        write_history(rows)
        if board is not None:
            board.write(rows[-1])
        if after_epoch is not None:
            after_epoch(trainer, settings, rows[-1]["epoch"], out)

    config = {k: settings[k] for k in settings}
    meta = {
        "task": task, "engine": engine, "model": settings["model"], "config": config,
        "data_sha256": plan["data_digest"],
    }
    lr_changes = _lr_changes(plan, trained_before)
    if lr_changes:
        meta["lr_changes"] = lr_changes
    if source is None and writes:
        # The initial state, so that a run stopped in its first epoch (killed, Ctrl-C, a NaN)
        # can be resumed like any other.
        arrays, trainer_meta = trainer.state()
        with _stopping(plan, paths):
            checkpoint.save(paths["checkpoint"], arrays,
                            {**meta, "epoch": 0, "history": [], "trainer": trainer_meta})
    try:
        with _stopping(plan, paths):
            history = loop.fit(
                trainer, split, epochs=settings["epochs"], batch_size=settings["batch_size"],
                seed=settings["seed"], checkpoint_path=paths["checkpoint"] if writes else None,
                meta=meta, history=history, on_epoch_end=on_epoch_end if writes else None,
                verbose=plan["verbose"] and writes,
            )
    finally:
        if board is not None:
            board.close()
    if grouped:
        process_group.leave()
    if not writes:
        return None
    with _stopping(plan, paths, trained=True):
        return _finish(plan, started, trainer, split, history, trained_before, meta, paths,
                       resumed_from, started_from)


def _finish(plan, started, trainer, split, history, trained_before, meta, paths, resumed_from,
            started_from):
    """After training: the checkpoint (if nothing was trained), what the judge reads, the judge,
    the figures and metrics.json."""
    from customfit import checkpoint, plots
    from customfit.engines import loop

    task, engine, spec, settings = plan["task"], plan["engine"], plan["spec"], plan["settings"]
    out, config = plan["out"], meta["config"]

    def write_history(rows):
        checkpoint.atomic_write(paths["history"], loop.history_csv(rows))

    if len(history) == trained_before:
        # Nothing left to train (a finished run resumed, or a run started from another's model):
        # this folder still gets its own checkpoint and history, so --resume works from it.
        arrays, trainer_meta = trainer.state()
        checkpoint.save(paths["checkpoint"], arrays,
                        {**meta, "epoch": len(history), "history": history, "trainer": trainer_meta})
        write_history(history)

    title = f"{task} on {engine}"
    producing = time.perf_counter()
    outputs = precision.float32_outputs(spec.produce(trainer, split, settings, verbose=plan["verbose"]))
    produce_seconds = time.perf_counter() - producing
    metrics = spec.judge(outputs, split, settings)
    bars = spec.bars(settings)
    passed = meets(metrics, bars)
    references = spec.references(settings) if hasattr(spec, "references") else {}

    paths["curves"] = plots.curves(history, os.path.join(out, "curves.png"), title=title)
    paths.update(spec.write(outputs, trainer, split, history, out, title))

    seconds = [row["seconds"] for row in history]
    per_epoch = sum(seconds[1:]) / len(seconds[1:]) if len(seconds) > 1 else (seconds[0] if seconds else 0.0)
    versions = _versions(engine)
    total = time.perf_counter() - started
    report = {
        "task": task, "engine": engine, "model": settings["model"], "judge": spec.JUDGE,
        "headline": spec.HEADLINE, "precision": plan["policy"], "device": plan["device"],
        **metrics,
        "bar": bars, "passed": passed,
        "references": references,
        "config": config,
        "seconds_per_epoch": per_epoch,
        "seconds_per_epoch_note": "mean of epochs 2 onwards (the first includes tracing/compiling)",
        "first_epoch_seconds": seconds[0] if seconds else None,
        "epoch_seconds": seconds,
        "produce_seconds": produce_seconds,
        "produce_seconds_note": "what the judge reads (probabilities, attacks, samples), made after training",
        "total_seconds": total,
        "resumed_from_epoch": resumed_from,
        "started_from": started_from,
        **({"lr_changes": meta["lr_changes"]} if meta.get("lr_changes") else {}),
        "versions": versions,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    checkpoint.atomic_write(paths["metrics"], json.dumps(report, indent=2) + "\n")
    return Result(
        task=task, engine=engine, config=config, metrics=metrics, bars=bars, passed=passed,
        history=history, paths=paths, out_dir=out, seconds_per_epoch=per_epoch, total_seconds=total,
        resumed_from_epoch=resumed_from, versions=versions, started_from=started_from,
        references=references, precision=plan["policy"], device=plan["device"],
    )


def _lr_changes(plan, trained_before):
    """The learning rates a resumed run changed to, after a stop on a non-finite loss:
    [{"epoch": first epoch at the new rate, "lr": rate}, ...]."""
    if plan["resumed"] is None:
        return []
    previous = plan["resumed"][1]
    changes = list(previous.get("lr_changes") or [])
    if plan["settings"]["lr"] != previous["config"]["lr"]:
        changes.append({"epoch": trained_before + 1, "lr": plan["settings"]["lr"]})
    return changes


# ----------------------------------------------------------------------------- stopping


def resume_command(plan, lr=None):
    """The command line that continues this run."""
    import shlex

    spec, settings = plan["spec"], plan["settings"]
    words = ["customfit", "run", plan["task"], "--engine", plan["engine"], "--out", plan["out"]]
    if settings["model"] != spec.DEFAULTS["model"]:
        words += ["--model", settings["model"]]
    if isinstance(plan["data_given"], (str, os.PathLike)):
        words += ["--data", os.fspath(plan["data_given"])]
    words.append("--resume")
    if lr is not None:  # a suggestion: short
        words += ["--lr", f"{lr:.3g}"]
    elif plan["resumed"] is not None and plan["resumed"][1]["config"]["lr"] != settings["lr"]:
        # Changed on this resume, and maybe not in the checkpoint yet: exactly as given.
        words += ["--lr", repr(settings["lr"])]
    return shlex.join(words)


def _kept(path):
    """(epoch, words) for what the checkpoint on disk holds now."""
    from customfit import checkpoint

    try:
        _, meta = checkpoint.load(path)
    except CheckpointError:
        return None, f"no checkpoint could be kept in {os.path.dirname(path) or '.'}"
    epoch = meta.get("epoch")
    held = "the initial weights (epoch 0)" if epoch == 0 else f"epoch {epoch}"
    return epoch, f"{path} keeps {held}"


def _mark_stopped(path, stop):
    """Note in the kept checkpoint that its run stopped on a non-finite loss: resuming it may
    then change --lr."""
    from customfit import checkpoint

    try:
        arrays, meta = checkpoint.load(path)
        meta["stopped"] = {"why": stop.why, "epoch": stop.epoch, "step": stop.step}
        checkpoint.save(path, arrays, meta)
    except (CheckpointError, WriteError):
        pass  # the checkpoint stays as it was, and still resumes at the same learning rate


class _stopping:
    """Turns the ways a run can stop early into one line that says where it stopped, what the
    checkpoint keeps and how to go on: a non-finite loss (exit status 3), Ctrl-C (130), a write
    that failed (1)."""

    def __init__(self, plan, paths, trained=False):
        self.plan, self.paths, self.trained = plan, paths, trained

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        from customfit.engines.loop import Stopped

        if error is None or isinstance(error, (UsageError, RunStopped)) and not isinstance(error, WriteError):
            return False
        plan, path = self.plan, self.paths["checkpoint"]
        if isinstance(error, Stopped):
            if error.why in ("nonfinite", "diverged"):
                _mark_stopped(path, error)
                _, kept = _kept(path)
                lr = plan["settings"]["lr"]
                default_lr = plan["spec"].DEFAULTS["lr"]
                lower = default_lr if lr > default_lr else lr / 10
                if error.why == "nonfinite":
                    what = " and ".join(f"{k} = {v}" for k, v in error.figures.items())
                else:
                    what = " and ".join(f"{k} rose from {error.first[k]:.4g} to {v:.4g}"
                                        for k, v in error.figures.items())
                raise NonFiniteLoss(
                    f"{what} at epoch {error.epoch}, step {error.step} of {error.steps} "
                    f"(lr {lr:g}): training stopped; {kept}; go on with a lower learning rate: "
                    f"{resume_command(plan, lower)}") from None
            where = (f"after epoch {error.epoch}" if error.checkpointed
                     else f"after step {error.step} of {error.steps} in epoch {error.epoch}")
            _, kept = _kept(path)
            raise Interrupted(f"Ctrl-C {where}; {kept}; go on with: {resume_command(plan)}") from None
        if isinstance(error, KeyboardInterrupt):
            when = "after training" if self.trained else "during training"
            _, kept = _kept(path)
            raise Interrupted(f"Ctrl-C {when}; {kept}; go on with: {resume_command(plan)}") from None
        if isinstance(error, WriteError):
            _, kept = _kept(path)
            raise WriteError(f"{error.message}; {kept}; when there is room again, go on with: "
                             f"{resume_command(plan)}") from None
        return False


def meets(metrics, bars):
    """Whether every bar holds: a number is a minimum; ("<=", x) a maximum."""
    def holds(value, bar):
        if isinstance(bar, (tuple, list)):
            op, limit = bar
            return value <= limit if op == "<=" else value >= limit
        return value >= bar

    return all(holds(metrics[k], bar) for k, bar in bars.items())


def describe_bar(bar):
    if isinstance(bar, (tuple, list)):
        return f"{bar[0]} {bar[1]}"
    return f">= {bar}"


_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "keras"),
    "torch": ("torch",),
    "flax": ("flax", "jax", "jaxlib", "optax"),
    "keras-tensorflow": ("keras", "tensorflow", "tensorflow-cpu"),
    "keras-torch": ("keras", "torch"),
    "keras-jax": ("keras", "jax", "jaxlib"),
}


def _versions(engine):
    from importlib import metadata

    import numpy as np

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("customfit",) + _DISTRIBUTIONS[engine]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "customfit":
                import customfit

                versions[name] = customfit.__version__
    return versions


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count()}


# ----------------------------------------------------------------------------- subprocess


def _run_in_subprocess(task, engine, config, plan):
    config = dict(config)
    with tempfile.TemporaryDirectory(prefix="customfit-") as tmp:
        data = plan["data_given"]
        if data is not None and not isinstance(data, (str, os.PathLike)):
            import numpy as np

            data_path = os.path.join(tmp, "data.npz")
            split = plan["split"]
            np.savez(data_path, x_train=split.x_train, y_train=split.y_train,
                     x_test=split.x_test, y_test=split.y_test)
            config["data"] = data_path
            config["_data_label"] = "arrays"
        elif data is not None:
            config["data"] = os.fspath(data)
        config["out"] = plan["out"]  # the child runs in this process's working folder
        request = os.path.join(tmp, "request.json")
        answer = os.path.join(tmp, "result.json")
        with open(request, "w") as f:
            json.dump({"task": task, "engine": engine, "config": config, "result": answer}, f)
        env = dict(os.environ, KERAS_BACKEND=registry.KERAS_BACKEND[engine])
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Ctrl-C reaches the child too (one process group): the child stops at the end of its
        # step and writes its checkpoint, while this process waits for its answer.
        import signal

        previous = _ignore_sigint(signal)
        try:
            proc = subprocess.run([sys.executable, "-m", "customfit.engines.runner", request],
                                  env=env)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if not os.path.exists(answer):
            raise CustomfitError(f"the {engine} subprocess ended with status {proc.returncode} and no result")
        with open(answer) as f:
            reply = json.load(f)
    if "error" in reply:
        kind = reply["kind"]
        if kind in ("UsageError", "CheckpointError"):
            cls = {"UsageError": UsageError, "CheckpointError": CheckpointError}[kind]
            raise cls(reply["error"], field=reply.get("field"))
        cls = {"NonFiniteLoss": NonFiniteLoss, "Interrupted": Interrupted,
               "WriteError": WriteError}.get(kind, CustomfitError)
        raise cls(reply["error"])
    return None if reply["result"] is None else Result(**reply["result"])


def _ignore_sigint(signal):
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _child(request_path):
    """The subprocess's side: run the request in this (fresh) process, write the Result as JSON."""
    with open(request_path) as f:
        request = json.load(f)
    answer = request["result"]
    try:
        result = run(request["task"], request["engine"], **request["config"])
        # None: a process other than process 0 of a run across hosts, which writes nothing.
        reply = {"result": None if result is None else asdict(result)}
        status = 0
    except UsageError as e:
        reply = {"error": e.message, "field": e.field, "kind": type(e).__name__}
        status = 2
    except CustomfitError as e:
        reply = {"error": str(e), "kind": type(e).__name__}
        status = e.exit_status
    with open(answer, "w") as f:
        json.dump(reply, f)
    return status


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
