"""Run one classifier engine on a job and write what it computed; tests/test_classifier_engines.py
starts one per engine, each in its own process, because Keras's backend is fixed per process.

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> python tests/workers/classifier_worker.py JOB.json

JOB.json:
    {"engine": "torch",
     "inputs": "in.npz",                  # the parity cases' weights and batches (canonical layout)
     "output": "out",                     # writes out.npz (arrays) and out.json (everything else)
     "parity": [{"name": "toy", "layers": [...], "input_shape": [2], "num_classes": 5,
                 "eval_batch_size": 24}, ...],
     "training": {"layers": [...], "n_train": 256, "batch_size": 32, "lr": 0.001, "seed": 0},
     "construct_only": false}             # true: only build a Trainer, report any error

Arrays in in.npz are named "<case>/x", "<case>/y" and "<case>/w/<i>".
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


def _trainer_class(engine):
    return registry.trainer_class("digits", engine)  # toy and digits share the classifier family


def _tuples(layers):
    return tuple(tuple(layer) for layer in layers)


def parity(engine, case, inputs, arrays, report):
    """Loss, gradients, evaluate and predict_proba at given weights, on a given batch."""
    name = case["name"]
    x, y = inputs[f"{name}/x"], inputs[f"{name}/y"]
    n_weights = sum(1 for key in inputs if key.startswith(f"{name}/w/"))
    weights = [inputs[f"{name}/w/{i}"] for i in range(n_weights)]
    Trainer = _trainer_class(engine)
    trainer = Trainer(
        _tuples(case["layers"]), tuple(case["input_shape"]), case["num_classes"], 1e-3, 0
    )
    trainer.set_weights(weights)
    loss, grads = trainer.objective_and_grads((x, y))
    after = trainer.get_weights()  # objective_and_grads must not have moved anything
    report[name] = {
        "loss": loss,
        "weights_round_trip": all(np.array_equal(a, b) for a, b in zip(after, weights)),
        "n_grads": len(grads),
        "evaluate": trainer.evaluate(x, y, case["eval_batch_size"]),
    }
    for i, grad in enumerate(grads):
        arrays[f"{name}/grad/{i}"] = np.asarray(grad)
    arrays[f"{name}/proba"] = np.asarray(trainer.predict_proba(x))


def training(engine, job, arrays, report):
    """Run A: 2 epochs straight. Run B: 1 epoch, state(), then its epoch 2. Run C: a new
    Trainer load_state()s B's state (through files) and trains epoch 2. Run D: A again.
    Run E: A's first epoch with seed + 1."""
    data = digits_split()
    n = job["n_train"]
    x, y = data.x_train[:n], data.y_train[:n]
    layers, seed = _tuples(job["layers"]), job["seed"]
    Trainer = _trainer_class(engine)

    def new(run_seed):
        return Trainer(layers, data.input_shape, data.num_classes, job["lr"], run_seed)

    def epochs(trainer, run_seed, which):
        history = []
        for epoch in which:
            batches = []
            started = time.perf_counter()
            means = trainer.train_epoch(
                x, y, job["batch_size"], epoch_seed(run_seed, epoch), batches.append
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
    report["A"] = epochs(a, seed, [0, 1])
    b = new(seed)
    report["B"] = epochs(b, seed, [0])
    state, meta = b.state()
    report["state_meta"] = meta
    report["state_step"] = int(state["adam/step"])
    # B trains on: the state already taken must not move with it (no views of live memory).
    taken = {key: value.copy() for key, value in state.items()}
    report["B"] += epochs(b, seed, [1])
    report["state_kept"] = all(np.array_equal(state[key], taken[key]) for key in taken)
    state, meta = through_files(state, meta)  # as a checkpoint stores it
    c = new(seed)
    c.load_state(state, meta)
    report["C"] = epochs(c, seed, [1])
    d = new(seed)
    report["D"] = epochs(d, seed, [0, 1])
    e = new(seed + 1)
    report["E"] = epochs(e, seed + 1, [0])
    for run, trainer in (("A", a), ("B", b), ("C", c), ("D", d)):
        for i, w in enumerate(trainer.get_weights()):
            arrays[f"{run}/w/{i}"] = np.asarray(w)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    engine = job["engine"]
    report, arrays = {"engine": engine, "keras_backend": os.environ.get("KERAS_BACKEND")}, {}
    if job.get("construct_only"):
        try:
            _trainer_class(engine)((("dense", 2, None),), (3,), 2, 1e-3, 0)
            report["error"] = None
        except Exception as error:  # the test checks which error, and what it says
            report["error"] = {"type": type(error).__name__, "message": str(error)}
    else:
        with np.load(job["inputs"], allow_pickle=False) as saved:
            inputs = {key: saved[key] for key in saved.files}
        report["parity"] = {}
        for case in job.get("parity", []):
            parity(engine, case, inputs, arrays, report["parity"])
        if job.get("training"):
            training(engine, job["training"], arrays, report)
    np.savez(job["output"] + ".npz", **arrays)
    with open(job["output"] + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
