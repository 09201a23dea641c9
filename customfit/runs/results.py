"""After training: from what was trained (a Trained, training.py), the judge, the figures,
metrics.json, and the Result a run gives back."""

import json
import os
import platform
import time
from dataclasses import dataclass, field

from customfit import precision, registry


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


def finish(plan, trained, started, device):
    """After training: the checkpoint (if nothing was trained), what the judge reads, the judge,
    the figures and metrics.json."""
    from customfit import checkpoint, plots
    from customfit.engines import loop

    task, engine, spec, settings = plan.task, plan.engine, plan.spec, plan.settings
    trainer, split, history, meta = trained.trainer, trained.split, trained.history, trained.meta
    out, config, paths = plan.out, meta["config"], dict(trained.paths)

    if len(history) == trained.trained_before:
        # Nothing left to train (a finished run resumed, or a run started from another's model):
        # this folder still gets its own checkpoint and history, so --resume works from it.
        arrays, trainer_meta = trainer.state()
        checkpoint.save(
            paths["checkpoint"],
            arrays,
            {**meta, "epoch": len(history), "history": history, "trainer": trainer_meta},
        )
        checkpoint.atomic_write(paths["history"], loop.history_csv(history))

    title = f"{task} on {engine}"
    producing = time.perf_counter()
    outputs = precision.float32_outputs(
        spec.produce(trainer, split, settings, verbose=plan.verbose)
    )
    produce_seconds = time.perf_counter() - producing
    metrics = spec.judge(outputs, split, settings)
    bars = spec.bars(settings)
    passed = meets(metrics, bars)
    references = registry.hook(spec, "references")(settings)

    paths["curves"] = plots.curves(history, os.path.join(out, "curves.png"), title=title)
    paths.update(spec.write(outputs, trainer, split, history, out, title))

    seconds = [row["seconds"] for row in history]
    per_epoch = (
        sum(seconds[1:]) / len(seconds[1:])
        if len(seconds) > 1
        else (seconds[0] if seconds else 0.0)
    )
    versions = framework_versions(engine)
    total = time.perf_counter() - started
    report = {
        "task": task,
        "engine": engine,
        "model": settings["model"],
        "judge": spec.JUDGE,
        "headline": spec.HEADLINE,
        "precision": trained.policy,
        "device": device,
        **metrics,
        "bar": bars,
        "passed": passed,
        "references": references,
        "config": config,
        "seconds_per_epoch": per_epoch,
        "seconds_per_epoch_note": "mean of epochs 2 onwards (the first includes tracing/compiling)",
        "first_epoch_seconds": seconds[0] if seconds else None,
        "epoch_seconds": seconds,
        "produce_seconds": produce_seconds,
        "produce_seconds_note": "what the judge reads (probabilities, attacks, samples), made after training",
        "total_seconds": total,
        "resumed_from_epoch": trained.resumed_from,
        "started_from": trained.started_from,
        **({"lr_changes": meta["lr_changes"]} if meta.get("lr_changes") else {}),
        "versions": versions,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    checkpoint.atomic_write(paths["metrics"], json.dumps(report, indent=2) + "\n")
    return Result(
        task=task,
        engine=engine,
        config=config,
        metrics=metrics,
        bars=bars,
        passed=passed,
        history=history,
        paths=paths,
        out_dir=out,
        seconds_per_epoch=per_epoch,
        total_seconds=total,
        resumed_from_epoch=trained.resumed_from,
        versions=versions,
        started_from=trained.started_from,
        references=references,
        precision=trained.policy,
        device=device,
    )


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


DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "keras"),
    "torch": ("torch",),
    "flax": ("flax", "jax", "jaxlib", "optax"),
    "keras-tensorflow": ("keras", "tensorflow", "tensorflow-cpu"),
    "keras-torch": ("keras", "torch"),
    "keras-jax": ("keras", "jax", "jaxlib"),
}


def framework_versions(engine):
    from importlib import metadata

    import numpy as np

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("customfit",) + DISTRIBUTIONS[engine]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "customfit":
                import customfit

                versions[name] = customfit.__version__
    return versions


def machine():
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
