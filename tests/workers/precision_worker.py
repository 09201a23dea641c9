"""Run one engine's --precision checks and write what they measured; tests/test_precision.py
starts one per engine, each in its own process, because Keras's backend is fixed per process.

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/precision_worker.py JOB.json

JOB.json:
    {"engine": "torch", "task": "toy", "epochs": 2, "folder": "DIR",
     "output": "out",           # writes out.json (the figures) and out.npz (nothing else)
     "float16": true}           # also train one epoch under mixed_float16 on this CPU, as a GPU
                                # would (torch: GradScaler; tensorflow: LossScaleOptimizer)

For each precision it runs cf.run(task, engine, precision=...) in this process, and reports the
Result's precision, metrics.json's, the config, the judge's figures and the history; then it
builds the task's Trainer under mixed and reports the dtype its first layer computes in.
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import customfit as cf  # noqa: E402
from customfit import loss_scale_state, precision, registry  # noqa: E402
from customfit.data import epoch_seed  # noqa: E402


def first_layer_dtype(engine, trainer, x):
    """The dtype of the first dense layer's output for inputs x, as the engine computes it."""
    if engine in ("keras-tensorflow", "keras-torch", "keras-jax"):
        return str(trainer.model.network.layers[0].compute_dtype)
    if engine == "tensorflow":
        return str(trainer.model.layers[0].compute_dtype)
    if engine == "torch":
        import torch

        with torch.no_grad(), precision.autocast():
            return str(trainer.model[0](torch.from_numpy(x)).dtype).removeprefix("torch.")
    if engine == "flax":
        return str(trainer.model.net.layers[0](x).dtype)
    raise ValueError(engine)


def runs(job):
    engine, task, folder = job["engine"], job["task"], job["folder"]
    report = {}
    for name in ("float32", "mixed"):
        out = os.path.join(folder, f"{task}-{engine}-{name}")
        result = cf.run(task, engine, epochs=job["epochs"], precision=name, out=out, verbose=False)
        with open(result.paths["metrics"]) as f:
            written = json.load(f)
        report[name] = {
            "result_precision": result.precision,
            "written": written["precision"],
            "config": result.config,
            "metrics": result.metrics,
            "history": result.history,
            "passed": result.passed,
            "out": out,
        }
    return report


def probe(job):
    """The mixed Trainer's first layer dtype, and its output's (what the judge reads)."""
    engine, task = job["engine"], job["task"]
    spec = registry.spec(task)
    split = spec.load()
    settings = {**spec.DEFAULTS, "data": "built-in"}
    precision.use(engine, "mixed")
    trainer = spec.build_trainer(registry.trainer_class(task, engine), split, settings)
    x = split.x_test[:8].astype(np.float32)
    found = {
        "first_layer": first_layer_dtype(engine, trainer, x),
        "proba": str(np.asarray(trainer.predict_proba(x)).dtype),
    }
    precision.use(engine, "float32")
    return found


def float16_epoch(job):
    """One epoch under mixed_float16 with the engine's loss scaling, on this CPU."""
    engine, task = job["engine"], job["task"]
    spec = registry.spec(task)
    split = spec.load()
    settings = {**spec.DEFAULTS, "data": "built-in"}
    policy = precision.use(engine, "mixed", gpu=True)
    trainer = spec.build_trainer(registry.trainer_class(task, engine), split, settings)
    before = [np.array(w) for w in trainer.get_weights()]
    # Epoch 1's order, as the float32 run shuffled it (customfit.engines.loop).
    means = trainer.train_epoch(
        *split.train,
        batch_size=settings["batch_size"],
        shuffle_seed=epoch_seed(settings["seed"], 1),
        on_batch=lambda _: None,
    )
    after = trainer.get_weights()
    found = {
        "policy": policy,
        "loss": means["loss"],
        "accuracy": means["accuracy"],
        "moved": float(max(np.max(np.abs(a - b)) for a, b in zip(after, before))),
        "first_layer": first_layer_dtype(engine, trainer, split.x_test[:8]),
    }
    if engine == "torch":
        found["scaler_enabled"] = trainer.scaler.is_enabled()
        found["scale"] = float(trainer.scaler.get_scale())
    else:
        import keras

        found["loss_scale_optimizer"] = isinstance(
            trainer.optimizer, keras.optimizers.LossScaleOptimizer
        )
        found["scale"] = float(trainer.optimizer.dynamic_scale.numpy())
    # What a checkpoint keeps of the loss scale, put back into a Trainer that has not trained.
    saved = loss_scale_state.arrays(trainer)
    fresh = spec.build_trainer(registry.trainer_class(task, engine), split, settings)
    loss_scale_state.restore(fresh, saved)
    found["checkpointed"] = {k: float(v) for k, v in saved.items()}
    found["restored"] = {k: float(v) for k, v in loss_scale_state.arrays(fresh).items()}
    precision.use(engine, "float32")
    return found


def main(path):
    with open(path) as f:
        job = json.load(f)
    report = {"runs": runs(job), "probe": probe(job)}
    if job.get("float16"):
        report["float16"] = float16_epoch(job)
    with open(job["output"] + ".json", "w") as f:
        json.dump(report, f)
    np.savez(job["output"] + ".npz")


if __name__ == "__main__":
    main(sys.argv[1])
