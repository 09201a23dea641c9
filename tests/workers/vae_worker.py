"""Run one VAE engine on a job and write what it computed; tests/test_vae_engines.py starts one per
engine, each in its own process, because Keras's backend is fixed per process.

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/vae_worker.py JOB.json

JOB.json:
    {"engine": "torch",
     "inputs": "in.npz",     # per parity case: "<case>/x", "<case>/eps", "<case>/w/<net>/<i>"
     "output": "out",        # writes out.npz (arrays) and out.json (everything else)
     "parity": [{"name": "default", "network": "mlp", "objective": "elbo", "latent": 8,
                 "temperature": 0.1}, ...],
     "eval_batch_size": 7,
     "training": {"network": "mlp", "objective": "elbo", "latent": 8, "temperature": 0.1,
                  "n_train": 192, "batch_size": 48, "lr": 0.001, "seed": 0}}
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from state_files import through_files  # noqa: E402

from customfit import registry  # noqa: E402
from customfit.data import digits_split, epoch_seed  # noqa: E402
from customfit.tasks.vae import layout  # noqa: E402


def _trainer_class(engine):
    return registry.trainer_class("vae", engine)


def _new(engine, case, seed=0, lr=1e-3):
    return _trainer_class(engine)(
        case["network"], case["objective"], case["latent"], case["temperature"], lr, seed
    )


def parity(engine, case, inputs, arrays, report, eval_batch_size):
    """The objective and its gradients at given weights for a given batch and noise; the
    encoder's and decoder's outputs there too."""
    name = case["name"]
    x, eps = inputs[f"{name}/x"], inputs[f"{name}/eps"]
    shapes = layout.canonical_shapes(case["network"], case["latent"])
    weights = {
        net: [inputs[f"{name}/w/{net}/{i}"] for i in range(len(shapes[net]))] for net in layout.NETS
    }
    trainer = _new(engine, case)
    trainer.set_weights(weights)
    loss, grads = trainer.objective_and_grads((x,), eps)
    after = trainer.get_weights()  # objective_and_grads must not have moved anything
    report[name] = {
        "loss": loss,
        "weights_round_trip": all(
            np.array_equal(a, b) for net in layout.NETS for a, b in zip(after[net], weights[net])
        ),
        "n_grads": {net: len(grads[net]) for net in layout.NETS},
        "evaluate": trainer.evaluate(x, batch_size=eval_batch_size),
    }
    for net in layout.NETS:
        for i, grad in enumerate(grads[net]):
            arrays[f"{name}/grad/{net}/{i}"] = np.asarray(grad)
    mu, logvar = trainer.encode(x)
    arrays[f"{name}/mu"], arrays[f"{name}/logvar"] = mu, logvar
    arrays[f"{name}/decoded"] = trainer.decode(mu)


def training(engine, job, arrays, report):
    """Run A: 2 epochs straight. Run B (a new Trainer, the same seed): 1 epoch, state(), then
    its epoch 2. Run C: a new Trainer load_state()s B's state (through files) and trains epoch 2.
    Run E: A's first epoch with seed + 1. Then samples from A, twice with one seed and once with
    another. (Every new Trainer costs the JAX engines a compilation: keep them few.)"""
    x = digits_split().x_train[: job["n_train"]]
    seed = job["seed"]

    def new(run_seed):
        return _new(engine, job, seed=run_seed, lr=job["lr"])

    def epochs(trainer, run_seed, which):
        history = []
        for epoch in which:
            batches = []
            started = time.perf_counter()
            means = trainer.train_epoch(
                x,
                batch_size=job["batch_size"],
                shuffle_seed=epoch_seed(run_seed, epoch),
                on_batch=batches.append,
            )
            history.append(
                {
                    "epoch": epoch,
                    "means": means,
                    "batches": batches,
                    "seconds": time.perf_counter() - started,
                }
            )
        return history

    a = new(seed)
    report["A"] = epochs(a, seed, [1, 2])
    report["A_evaluate"] = [a.evaluate(x, batch_size=64), a.evaluate(x, batch_size=64)]
    b = new(seed)
    report["B"] = epochs(b, seed, [1])
    state, meta = b.state()
    report["state_meta"] = meta
    report["state_step"] = int(state["adam/step"])
    report["state_names"] = sorted(state)
    taken = {key: value.copy() for key, value in state.items()}
    report["B"] += epochs(b, seed, [2])
    report["state_kept"] = all(np.array_equal(state[key], taken[key]) for key in taken)
    state, meta = through_files(state, meta)  # as a checkpoint stores it
    c = new(seed)
    c.load_state(state, meta)
    report["C"] = epochs(c, seed, [2])
    e = new(seed + 1)
    report["E"] = epochs(e, seed + 1, [1])
    for run, trainer in (("A", a), ("B", b), ("C", c)):
        for net, group in trainer.get_weights().items():
            for i, w in enumerate(group):
                arrays[f"{run}/w/{net}/{i}"] = np.asarray(w)
        state, _ = trainer.state()
        for key, value in state.items():
            arrays[f"{run}/state/{key}"] = value
    arrays["sample/seed0"] = a.sample(50, 0)
    arrays["sample/seed0_again"] = a.sample(50, 0)
    arrays["sample/seed1"] = a.sample(50, 1)
    arrays["sample/seed0_half"] = a.sample(50, 0, scale=0.5)
    z = np.zeros((3, job["latent"]), np.float32)
    arrays["decode/zeros"] = a.decode(z)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    engine = job["engine"]
    report, arrays = {"engine": engine, "keras_backend": os.environ.get("KERAS_BACKEND")}, {}
    with np.load(job["inputs"], allow_pickle=False) as saved:
        inputs = {key: saved[key] for key in saved.files}
    report["parity"] = {}
    for case in job.get("parity", []):
        parity(engine, case, inputs, arrays, report["parity"], job.get("eval_batch_size", 7))
    if job.get("training"):
        training(engine, job["training"], arrays, report)
    np.savez(job["output"] + ".npz", **arrays)
    with open(job["output"] + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
