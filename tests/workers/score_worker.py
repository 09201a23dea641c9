"""Run one score engine on a job and write what it computed; tests/test_score_engines.py starts one
per engine, each in its own process, because Keras's backend is fixed per process.

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/score_worker.py JOB.json

JOB.json:
    {"engine": "torch",
     "inputs": "in.npz",   # per case: "<case>/x", "<case>/w/<i>", its draws "<case>/probe" or
                           # "<case>/levels" and "<case>/z", and "<case>/xi" (Langevin noise)
     "output": "out",      # writes out.npz (arrays) and out.json (everything else)
     "parity": [{"name": "lecture_exact", "method": "lecture", "network": "lecture",
                 "divergence": "exact", "sigmas": null, "eps": 0.01, "level": null}, ...],
     "eval_batch_size": 7,
     "training": {"method": "dsm", "network": "toy", "sigmas": [...], "n_train": 256,
                  "batch_size": 64, "lr": 0.002, "seed": 0, "decay_steps": 8},
     "sampling": {"n": 50, "steps": 3, "step_size": 0.2, "start_std": 4.0, "record": [1, 3, 60]}}
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from customfit import registry  # noqa: E402
from customfit.data import epoch_seed, toy_split  # noqa: E402
from customfit.tasks.score import layout  # noqa: E402


def _new(engine, case, seed=0, lr=2e-3, decay_steps=None):
    return registry.trainer_class("score", engine)(
        case["method"],
        case["network"],
        lr,
        seed,
        sigmas=case.get("sigmas"),
        divergence=case.get("divergence") or "exact",
        decay_steps=decay_steps,
    )


def _draws(case, inputs):
    name = case["name"]
    if case["method"] == "dsm":
        return {"levels": inputs[f"{name}/levels"], "z": inputs[f"{name}/z"]}
    if case["divergence"] == "hutchinson":
        return {"probe": inputs[f"{name}/probe"]}
    return None


def parity(engine, case, inputs, arrays, report, eval_batch_size):
    """The objective and its gradients at given weights for a given batch and draws; the score,
    one Langevin step with given noise and (dsm) the denoising step there too."""
    name = case["name"]
    x = inputs[f"{name}/x"]
    weights = [
        inputs[f"{name}/w/{i}"] for i in range(len(layout.canonical_shapes(case["network"])))
    ]
    trainer = _new(engine, case)
    trainer.set_weights(weights)
    loss, grads = trainer.objective_and_grads((x,), _draws(case, inputs))
    after = trainer.get_weights()  # objective_and_grads must not have moved anything
    entry = {
        "loss": loss,
        "n_grads": len(grads),
        "weights_round_trip": all(np.array_equal(a, b) for a, b in zip(after, weights)),
    }
    for i, grad in enumerate(grads):
        arrays[f"{name}/grad/{i}"] = np.asarray(grad)
    level = case.get("level")
    arrays[f"{name}/score"] = trainer.score(x, level)
    arrays[f"{name}/step"] = trainer.langevin_step(x, inputs[f"{name}/xi"], case["eps"], level)
    if case["method"] == "dsm":
        arrays[f"{name}/denoised"] = trainer.denoise(x)
    if case["method"] == "lecture" and case["divergence"] == "exact":
        entry["evaluate"] = trainer.evaluate(x, batch_size=eval_batch_size)
    if engine.startswith("keras") and case["divergence"] == "hutchinson":
        entry["probe_check"] = keras_probe_check(trainer, x)
    report[name] = entry


def keras_probe_check(trainer, x):
    """The keras engines train through cf.ops.divergence(..., "hutchinson", seed=SeedGenerator),
    which draws its own probe; the parity hook takes the probe from outside. From the same
    SeedGenerator state the two must be the same objective: (loss via cf.ops.divergence, loss
    with the probe that state draws)."""
    import keras
    from keras import ops as K

    from customfit.trainers.keras_trainer import reseed

    x = K.convert_to_tensor(np.asarray(x, "float32"))
    reseed(trainer.model.noise, 7)
    via_divergence = float(K.convert_to_numpy(trainer.model.figures(x)["loss"]))
    bits = keras.random.randint(K.shape(x), 0, 2, seed=keras.random.SeedGenerator(7))
    probe = K.cast(bits, "float32") * 2.0 - 1.0
    given = float(K.convert_to_numpy(trainer.model.figures(x, {"probe": probe})["loss"]))
    return [via_divergence, given]


def training(engine, job, arrays, report):
    """Run A: 2 epochs straight. Run B (a new Trainer, the same seed): 1 epoch, state(), then its
    epoch 2. Run C: a new Trainer load_state()s B's state (through files) and trains epoch 2.
    A Trainer of seed + 1 only shows its initial weights (every new Trainer costs the JAX
    engines a compilation: keep them few)."""
    x = toy_split().x_train[: job["n_train"]]
    seed = job["seed"]

    def new(run_seed):
        return _new(engine, job, seed=run_seed, lr=job["lr"], decay_steps=job["decay_steps"])

    def epochs(trainer, which):
        history = []
        for epoch in which:
            batches = []
            started = time.perf_counter()
            means = trainer.train_epoch(
                x,
                batch_size=job["batch_size"],
                shuffle_seed=epoch_seed(seed, epoch),
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
    initial = a.get_weights()
    report["A"] = epochs(a, [1, 2])
    report["A_evaluate"] = [a.evaluate(x, batch_size=64), a.evaluate(x, batch_size=64)]
    b = new(seed)
    report["B"] = epochs(b, [1])
    state, meta = b.state()
    report["state_meta"] = meta
    report["state_step"] = int(state["adam/step"])
    report["state_names"] = sorted(state)
    taken = {key: value.copy() for key, value in state.items()}
    report["B"] += epochs(b, [2])
    report["state_kept"] = all(np.array_equal(state[key], taken[key]) for key in taken)
    with tempfile.TemporaryDirectory() as folder:  # a checkpoint's way: plain arrays and JSON
        np.savez(os.path.join(folder, "state.npz"), **state)
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(meta, f)
        with np.load(os.path.join(folder, "state.npz"), allow_pickle=False) as saved:
            state = {key: saved[key] for key in saved.files}
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    c = new(seed)
    c.load_state(state, meta)
    report["C"] = epochs(c, [2])
    other = new(seed + 1).get_weights()
    report["seed_changes_weights"] = not all(np.array_equal(p, q) for p, q in zip(initial, other))
    for run, trainer in (("A", a), ("B", b), ("C", c)):
        for i, w in enumerate(trainer.get_weights()):
            arrays[f"{run}/w/{i}"] = np.asarray(w)
        state, _ = trainer.state()
        for key, value in state.items():
            arrays[f"{run}/state/{key}"] = value
    return a


def sampling(trainer, job, arrays):
    s = job
    for name, seed in (("seed0", 0), ("seed0_again", 0), ("seed1", 1)):
        samples, frames = trainer.sample(
            s["n"], seed, s["steps"], s["step_size"], s["start_std"], record=s["record"]
        )
        arrays[f"sample/{name}"], arrays[f"sample/{name}/frames"] = samples, frames
    arrays["sample/denoised_last_frame"] = trainer.denoise(arrays["sample/seed0/frames"][-1])


def sampling_keeps_no_graph(trainer):
    """Keras on torch: a score evaluated outside fit() must not carry an autograd graph, or a
    Langevin chain keeps every step's graph alive (a 4000-step run grew to 20 GB)."""
    from keras import ops as K

    x = K.convert_to_tensor(np.zeros((4, 2), "float32"))
    return bool(getattr(trainer._score(x, 0), "requires_grad", False))


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
        trained = training(engine, job["training"], arrays, report)
        if job.get("sampling"):
            sampling(trained, job["sampling"], arrays)
        if engine.startswith("keras"):
            report["score_keeps_graph"] = sampling_keeps_no_graph(trained)
    np.savez(job["output"] + ".npz", **arrays)
    with open(job["output"] + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
