"""One engine, one device against N: tests/test_devices.py starts one of these per engine, each in
its own process (the Keras backend, JAX's device count and TensorFlow's logical CPUs are fixed
per process).

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/devices_worker.py JOB.json

JOB.json: {"engine": "torch", "devices": 2, "tasks": ["digits", "gan"], "output": "out.json"}

For each task a Trainer on N devices and a reference on one device start from the same weights
(the one-device Trainer's, from the seed) and train the same epochs on the same samples in the
same order with the same global batch. The reference is the engine's own one-device Trainer,
except for the GAN on the torch engines: there batch norm cannot be synchronized (torch's
SyncBatchNorm runs on GPUs only, Keras has none on torch), each process normalizes its share of
a batch with that share's statistics, and the reference does the same on one device: each
update's objective is the mean of the objective on the batch's N shares (rows r, r + N, ...,
as DistributedSampler deals them), each share normalized with its own statistics. The running
(moving) statistics, which training-mode batch norm never reads, are then each process's own
and are left out of that comparison.

out.json holds, per task: the largest difference between the two states (every weight,
batch-norm statistic, Adam moment and step count, canonical layout), relative to the largest
magnitude of the same array, and between the two histories; how far training moved the weights;
on how many devices the framework held the weights; and, on the torch engines, the largest
difference between the N processes' states (DDP and cf.Model's all-reduce keep it at zero).
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
    "gan": {
        "n": 128,
        "batch_size": 32,
        "epochs": 1,
        "lr": 1e-3,
        "model": "default",
        "critic_steps": 2,
        "latent": 10,
    },
    "vae": {"n": 128, "batch_size": 32, "epochs": 2, "lr": 1e-3, "model": "default"},
}


def settings(task, devices):
    job = JOBS[task]
    return {
        "model": job["model"],
        "lr": job["lr"],
        "seed": 0,
        "devices": devices,
        **{k: job[k] for k in ("critic_steps", "latent") if k in job},
    }


def build(task, engine, devices, shares=1):
    spec = registry.spec(task)
    split = spec.load()
    trainer_class = registry.trainer_class(task, engine)
    if shares > 1:
        trainer_class = per_share_trainer(engine, shares)
    trainer = spec.build_trainer(trainer_class, split, settings(task, devices))
    return trainer, tuple(a[: JOBS[task]["n"]] for a in split.train)


def train(task, engine, devices, weights=None, shares=1):
    """(state, history, initial weights, trained weights, placement) after JOBS[task]'s epochs:
    on `devices`, or on one device with each batch's objective averaged over `shares`."""
    from customfit.data import epoch_seed

    trainer, arrays = build(task, engine, devices, shares)
    if weights is None:
        weights = trainer.get_weights()
    trainer.set_weights(weights)
    history = []
    for epoch in range(1, JOBS[task]["epochs"] + 1):
        history.append(
            trainer.train_epoch(
                *arrays,
                batch_size=JOBS[task]["batch_size"],
                shuffle_seed=epoch_seed(0, epoch),
                on_batch=lambda logs: None,
            )
        )
    state, _ = trainer.state()
    return state, history, weights, flat(trainer.get_weights()), placement(trainer, engine)


def train_in_group(tasks, engine, devices, weights):
    """One process of N (started by customfit.parallel.process_group.launch): each task's
    (state, history, placement)."""
    from customfit.parallel import process_group

    process_group.join()
    try:
        done = {}
        for task in tasks:
            state, history, _, _, where = train(task, engine, devices, weights[task])
            done[task] = state, history, where
        return done
    finally:
        process_group.leave()


def flat(weights):
    """Canonical weights (a list, or {network: list}) as {name: array}."""
    lists = weights if isinstance(weights, dict) else {"weights": weights}
    return {f"{net}/{i}": a for net in lists for i, a in enumerate(lists[net])}


def placement(trainer, engine):
    """On how many devices the framework holds the trained weights (JAX: the devices of a
    weight's sharding; TensorFlow: a mirrored variable's copies; torch: the processes of the
    group that DistributedDataParallel, or cf.Model's all-reduce, averaged over)."""
    if engine in spreading.TORCH_ENGINES:
        from customfit.parallel import process_group

        return process_group.world()
    network = next(
        getattr(trainer, name)
        for name in ("model", "gan", "gen", "encoder")
        if not isinstance(getattr(trainer, name, ""), str)
    )
    if engine == "flax":
        import jax
        from flax import nnx

        leaf = jax.tree_util.tree_leaves(nnx.state(network, nnx.Param))[0]
        return len(leaf.sharding.device_set)
    value = network.trainable_variables[0].value
    if engine == "keras-jax":
        return len(value.sharding.device_set)
    return len(getattr(value, "values", [value]))  # a MirroredVariable holds one per replica


# ---------------------------------------------------------------- the torch engines' GAN reference


def per_share_trainer(engine, shares):
    """A one-device GAN Trainer whose updates minimize the mean over a batch's `shares` shares of
    each objective, every share normalized with its own batch statistics."""
    if engine == "keras-torch":
        import functools

        from customfit.tasks.gan import with_keras

        class PerShareGAN(with_keras.GAN):
            def dis_objective(self, x, training=True):
                z = self.latents(x)
                return (
                    sum(self.dis_loss(x[r::shares], z[r::shares], training) for r in range(shares))
                    / shares
                )

            def gen_objective(self, x, training=True):
                z = self.latents(x)
                return sum(self.gen_loss(z[r::shares], training) for r in range(shares)) / shares

        return functools.partial(with_keras.Trainer, gan_class=PerShareGAN)

    from customfit.tasks.gan import with_torch

    def in_shares(loss):
        def mean_over_shares(*args):
            networks, batches = args[:2], args[2:]
            return (
                sum(loss(*networks, *(b[r::shares] for b in batches)) for r in range(shares))
                / shares
            )

        return mean_over_shares

    class PerShareTrainer(with_torch.Trainer):
        def _latents(self, n, noise):  # one process: the global batch's latents
            return self._noise(n, noise)

        def train_epoch(self, *args, **kwargs):
            # The step calls the module's dis_loss and gen_loss: for this epoch, the per-share
            # means of them (this process trains nothing else meanwhile).
            losses = with_torch.dis_loss, with_torch.gen_loss
            with_torch.dis_loss, with_torch.gen_loss = (in_shares(loss) for loss in losses)
            try:
                return super().train_epoch(*args, **kwargs)
            finally:
                with_torch.dis_loss, with_torch.gen_loss = losses

    return PerShareTrainer


def running_statistics(name):
    return name.endswith(("/mean", "/variance"))


# ---------------------------------------------------------------- the comparison


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


def rows(history):
    return {f"{i}/{k}": v for i, row in enumerate(history) for k, v in row.items()}


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    engine, n = job["engine"], job["devices"]
    spreading.prepare(engine, n)
    if engine in spreading.TENSORFLOW_ENGINES:
        from customfit.parallel import mirrored

        assert mirrored.can_make(n), "TensorFlow could not make the logical CPUs"
    tasks = job["tasks"]
    ones = {task: train(task, engine, 1) for task in tasks}
    weights = {task: ones[task][2] for task in tasks}
    if engine in spreading.TORCH_ENGINES:  # one launch of N processes for every task
        from customfit.parallel import process_group

        groups = process_group.launch(train_in_group, (tasks, engine, n, weights), n)
    report = {}
    for task in tasks:
        one, history_one, _, trained, one_placement = ones[task]
        reference, history_reference = one, history_one
        kept = sorted(one)
        if engine in spreading.TORCH_ENGINES:
            spread, history_spread, spread_placement = groups[0][task]
            if task == "gan":
                reference, history_reference, _, _, _ = train(
                    task, engine, 1, weights[task], shares=n
                )
                kept = [k for k in kept if not running_statistics(k)]
            between = [
                compare({k: spread[k] for k in kept}, {k: other[task][0][k] for k in kept})
                for other in groups[1:]
            ]
        else:
            spread, history_spread, _, _, spread_placement = train(task, engine, n, weights[task])
            between = []
        report[task] = {
            "reference": "per share" if reference is not one else "one device",
            "compared": len(kept),
            "arrays": len(one),
            "state": compare({k: reference[k] for k in kept}, {k: spread[k] for k in kept}),
            "history": compare(rows(history_reference), rows(history_spread)),
            "history_reference": history_reference,
            "history_spread": history_spread,
            "between_processes": between,
            "placement": [one_placement, spread_placement],
            "moved": compare(flat(weights[task]), trained),  # how far one device's training went
        }
    with open(job["output"], "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
