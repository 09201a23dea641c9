"""One engine, one device against N: tests/test_devices.py starts one of these per engine, each in
its own process (the Keras backend, JAX's device count and TensorFlow's logical CPUs are fixed
per process).

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/devices_worker.py JOB.json

JOB.json: {"engine": "torch", "devices": 2, "tasks": ["digits", "gan"], "output": "out.json"}

For each task: a Trainer on one device and a Trainer on N devices start from the same weights
(the one-device Trainer's, from the seed) and train the same epochs on the same samples in the
same order with the same global batch; out.json holds, per task, the largest difference between
their states (every weight, batch-norm statistic and Adam moment, canonical layout) and between
their histories. On the torch engines the N devices are N processes; the report also holds the
largest difference between those processes' states, which DistributedDataParallel (and the
all-reduce in cf.Model's torch step) keeps at zero.
"""

import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from customfit import devices as spreading  # noqa: E402
from customfit import registry  # noqa: E402

# Small runs: the samples are a multiple of every global batch, so every batch splits evenly and
# one device sees exactly the batches N devices see.
JOBS = {
    "digits": {"n": 256, "batch_size": 64, "epochs": 2, "lr": 1e-3, "model": "default"},
    "gan": {"n": 128, "batch_size": 32, "epochs": 1, "lr": 1e-3, "model": "default",
            "critic_steps": 2, "latent": 10},
}


def build(task, engine, devices):
    spec = registry.spec(task)
    job = JOBS[task]
    split = spec.load()
    settings = {"model": job["model"], "lr": job["lr"], "seed": 0, "devices": devices,
                **{k: job[k] for k in ("critic_steps", "latent") if k in job}}
    trainer = spec.build_trainer(registry.trainer_class(task, engine), split, settings)
    return trainer, tuple(a[: job["n"]] for a in split.train)


def train(task, engine, devices, weights=None):
    """(state arrays, history, initial weights) after JOBS[task]'s epochs on `devices`."""
    from customfit.data import epoch_seed

    trainer, arrays = build(task, engine, devices)
    if weights is None:
        weights = trainer.get_weights()
    trainer.set_weights(weights)
    history = []
    for epoch in range(1, JOBS[task]["epochs"] + 1):
        history.append(trainer.train_epoch(*arrays, batch_size=JOBS[task]["batch_size"],
                                           shuffle_seed=epoch_seed(0, epoch),
                                           on_batch=lambda logs: None))
    state, _ = trainer.state()
    return state, history, weights, flat(trainer.get_weights()), placement(trainer, engine)


def placement(trainer, engine):
    """On how many devices the framework holds the trained weights (JAX: the devices of a
    weight's sharding; TensorFlow: a mirrored variable's copies; torch: the processes of the
    group that DistributedDataParallel, or cf.Model's all-reduce, averaged over)."""
    network = next(getattr(trainer, name) for name in ("model", "gan", "gen")
                   if hasattr(trainer, name) and not isinstance(getattr(trainer, name), str))
    if engine in spreading.TORCH_ENGINES:
        from customfit.parallel import process_group

        return process_group.world()
    if engine == "flax":
        from flax import nnx

        import jax

        leaf = jax.tree_util.tree_leaves(nnx.state(network, nnx.Param))[0]
        return len(leaf.sharding.device_set)
    value = network.trainable_variables[0].value
    if engine == "keras-jax":
        return len(value.sharding.device_set)
    return len(getattr(value, "values", [value]))  # a MirroredVariable holds one per replica


def flat(weights):
    """Canonical weights (a list, or {network: list}) as {name: array}."""
    lists = weights if isinstance(weights, dict) else {"weights": weights}
    return {f"{net}/{i}": a for net in lists for i, a in enumerate(lists[net])}


def train_in_group(task, engine, devices, weights):
    """One process of N (started by customfit.parallel.process_group.launch)."""
    from customfit.parallel import process_group

    process_group.join()
    try:
        state, history, _, _, where = train(task, engine, devices, weights)
    finally:
        process_group.leave()
    return state, history, where


def compare(a, b):
    """How far arrays b are from arrays a (same names): the largest difference relative to the
    largest magnitude of the same array in a, and where; the largest absolute difference."""
    import numpy as np

    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    relative, where, absolute = 0.0, None, 0.0
    for name in a:
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        diff = float(np.max(np.abs(x - y), initial=0.0))
        scale = float(np.max(np.abs(x), initial=0.0))
        rel = diff / scale if scale > 0 else diff
        absolute = max(absolute, diff)
        if rel > relative or where is None:
            relative, where = rel, name
    return {"relative": relative, "where": where, "max_abs": absolute}


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    engine, n = job["engine"], job["devices"]
    spreading.prepare(engine, n)
    if engine in spreading.TENSORFLOW_ENGINES:
        from customfit.parallel import mirrored

        assert mirrored.can_make(n), "TensorFlow could not make the logical CPUs"
    report = {}
    for task in job["tasks"]:
        one, history_one, weights, trained, one_placement = train(task, engine, 1)
        if engine in spreading.TORCH_ENGINES:
            from customfit.parallel import process_group

            results = process_group.launch(train_in_group, (task, engine, n, weights), n)
            spread, history_spread, spread_placement = results[0]
            between = [compare(spread, other) for other, _, _ in results[1:]]
        else:
            spread, history_spread, _, _, spread_placement = train(task, engine, n, weights)
            between = []
        report[task] = {
            "state": compare(one, spread),
            "history": compare({f"{i}/{k}": v for i, row in enumerate(history_one)
                                for k, v in row.items()},
                               {f"{i}/{k}": v for i, row in enumerate(history_spread)
                                for k, v in row.items()}),
            "history_one": history_one, "history_spread": history_spread,
            "between_processes": between,
            "placement": [one_placement, spread_placement],
            "moved": compare(flat(weights), trained),  # how far training went
        }
    with open(job["output"], "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
