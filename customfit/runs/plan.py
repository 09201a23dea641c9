"""The plan of a run: everything a user gave, checked once, with the data loaded and (on resume)
the checkpoint read; every setting decided. Writes nothing: a mistake raises UsageError (one line)
and leaves the output folder as it was."""

import os
from dataclasses import dataclass

from customfit import compute_device, devices as spreading, options, precision, registry, validate
from customfit.errors import CheckpointError, UsageError

CONFIG_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "model",
    "out",
    "resume",
    "data",
    "verbose",
    "tensorboard",
    "devices",
    "precision",
    "device",
)
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
HISTORY = "history.csv"
# On resume these must match the checkpoint (they decide the numbers); epochs may grow.
PINNED = ("batch_size", "lr", "seed")


@dataclass(frozen=True)
class Plan:
    """A run, checked and decided: what the later steps carry out, and nothing they add to.

    settings: what the run trains with (its config in metrics.json and the checkpoint);
    split: the data given (None: the task's built-in data, loaded where the run trains);
    resumed, start: (arrays, meta) of the checkpoint resumed, or of the run it starts from;
    data_given: --data as given (a path goes into the resume command); device_wanted: --device."""

    task: str
    engine: str
    spec: object
    settings: dict
    split: object
    data_digest: str | None
    out: str
    resumed: tuple | None
    start: tuple | None
    verbose: bool
    data_given: object
    tensorboard: str | None
    device_wanted: str | None


def check_names(task, engine):
    """The task and the engine, named by the command line or by cf.run; else one line."""
    if task is None:
        raise UsageError.expected("task", f"one of {', '.join(registry.TASKS)}", given="nothing")
    validate.one_of("task", task, registry.TASKS)
    if engine is None:
        raise UsageError.expected(
            "engine", f"one of {', '.join(registry.ENGINES)}", given="nothing"
        )
    validate.one_of("engine", engine, registry.ENGINES)
    validate.installed_engine("engine", engine)


def build(task, engine, config):
    """Check everything a user gave, load the data and (on resume) the checkpoint, decide every
    setting. Writes nothing. Returns the Plan the later steps carry out."""
    check_names(task, engine)
    spec = registry.spec(task)
    option_names = tuple(registry.hook(spec, "OPTIONS"))
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(option_names) - {"_data_label"})
    if unknown:
        if unknown[0] in registry.all_option_names():
            options.resolve(spec, {unknown[0]: config[unknown[0]]})  # names the task's own options
        raise UsageError.expected(
            "config", f"keys among {', '.join(CONFIG_KEYS + option_names)}", unknown[0]
        )
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

    out = writable_folder("out", given.get("out", os.path.join("runs", f"{task}-{engine}")))
    tensorboard = given.get("tensorboard")
    if tensorboard is not None:
        tensorboard = writable_folder("tensorboard", tensorboard)

    data = given.get("data")
    if data is None:
        data = registry.hook(
            spec, "default_data"
        )()  # data kept outside the package (mnist: Keras's cache), or one line
    if data is not None:
        input_shape, num_classes = validate.task_shapes(spec)
        read = registry.hook(spec, "read_data")  # a task with its own file layout (mnist's uint8)
        split = read(data) if read else validate.user_data(data, input_shape, num_classes)
        data_label = os.fspath(data) if isinstance(data, (str, os.PathLike)) else "arrays"
        data_label = given.get("_data_label", data_label)
        data_digest = split_digest(split)
    else:
        split, data_label, data_digest = None, "built-in", None

    resume = bool(given.get("resume", False))
    resumed = start = None
    if resume:
        pinned_options = tuple(k for k in option_names if spec.OPTIONS[k].pinned)
        resumed = check_checkpoint(
            os.path.join(out, CHECKPOINT),
            task,
            engine,
            model,
            {**checked, **{k: task_options[k] for k in options_given}},
            data_digest,
            pinned_options,
        )
        previous = resumed[1]["config"]
        for key in ("epochs",) + PINNED:
            checked.setdefault(key, previous[key])
        checked.setdefault("precision", previous.get("precision", precision.DEFAULT))
        for key in option_names:  # the run goes on as it started, pinned or not
            if key not in options_given and key in previous:
                task_options[key] = previous[key]
        done = resumed[1]["epoch"]
        if checked["epochs"] < done:
            raise UsageError.expected(
                "epochs",
                f"at least {done} (the checkpoint has trained {done} epochs)",
                checked["epochs"],
            )
    else:
        # A task that starts from another run's trained model (adversarial: a digits run) takes
        # that run's training settings with its weights.
        start = registry.hook(spec, "start_from")(task_options, engine)
        if start is not None:
            source = start[1]["config"]
            for key in ("epochs",) + PINNED:
                if key in checked and checked[key] != source[key]:
                    raise UsageError.expected(
                        key,
                        f"{source[key]!r} as in the run it starts from (or leave "
                        f"--{key.replace('_', '-')} out)",
                        checked[key],
                    )
                checked[key] = source[key]
            if start[1].get("data_sha256") != data_digest:
                raise UsageError.expected(
                    "data", "the data the run it starts from was trained on", given="other data"
                )

    settings = {
        **{k: defaults[k] for k in ("epochs", "batch_size", "lr", "seed")},
        **{k: v for k, v in checked.items() if k != "precision"},
    }
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
    return Plan(
        task=task,
        engine=engine,
        spec=spec,
        settings=settings,
        split=split,
        data_digest=data_digest,
        out=out,
        resumed=resumed,
        start=start,
        verbose=bool(given.get("verbose", True)),
        data_given=data,
        tensorboard=tensorboard,
        device_wanted=device,
    )


def writable_folder(field, path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise UsageError.expected(field, "a folder's path", path)
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError.expected(
            field, "a folder (or a path where one can be made)", given=f"{path!r}, which is a file"
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError.expected(field, "a folder that can be written", given=repr(path))
    return path


def split_digest(split):
    import hashlib

    h = hashlib.sha256()
    for a in (split.x_train, split.y_train, split.x_test, split.y_test):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_checkpoint(path, task, engine, model, checked, data_digest, pinned_options=()):
    from customfit import checkpoint

    if not os.path.exists(path):
        raise CheckpointError.expected(
            "resume",
            "a checkpoint to resume from",
            given=f"no file {path} (run once without --resume)",
        )
    try:
        arrays, meta = checkpoint.load(path)
    except CheckpointError as e:
        e.field = "resume"
        raise
    want = {"task": task, "engine": engine, "model": model}
    for key, value in want.items():
        if meta.get(key) != value:
            raise CheckpointError.expected(
                "resume",
                f"a checkpoint of task {task}, engine {engine}, model {model}",
                given=f"{path}, written by task {meta.get('task')}, engine {meta.get('engine')}, "
                f"model {meta.get('model')}",
            )
    config, epoch, history = meta.get("config"), meta.get("epoch"), meta.get("history")
    pinned = PINNED + tuple(pinned_options)
    if (
        not isinstance(config, dict)
        or not all(k in config for k in ("epochs",) + pinned)
        or not isinstance(epoch, int)
        or not isinstance(history, list)
        or len(history) != epoch
    ):
        raise CheckpointError.expected(
            "resume",
            "a customfit run checkpoint",
            given=f"{path}, whose run metadata is incomplete",
        )
    stopped = meta.get("stopped") or {}
    for key in pinned:
        if key == "lr" and stopped.get("why") in ("nonfinite", "diverged"):
            continue  # the run diverged: it may go on at another learning rate
        if key in checked and checked[key] != config[key]:
            flag = "--" + key.replace("_", "-")
            raise UsageError.expected(
                key,
                f"{config[key]!r} as in the checkpoint being resumed (or leave {flag} out)",
                checked[key],
            )
    # Pinned too, but absent from the configs of float32 runs (and of runs older than it).
    was = config.get("precision", precision.DEFAULT)
    if checked.get("precision", was) != was:
        raise UsageError.expected(
            "precision",
            f"{was!r} as in the checkpoint being resumed (or leave --precision out)",
            checked["precision"],
        )
    if meta.get("data_sha256") != data_digest:
        want_data = "the data it was trained on" if meta.get("data_sha256") else "the built-in data"
        raise UsageError.expected(
            "data",
            f"{want_data} to resume this checkpoint",
            given="other data" if data_digest else "the built-in data",
        )
    return arrays, meta
