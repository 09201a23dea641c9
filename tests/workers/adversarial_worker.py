"""Run one engine's attack on a job and write what it computed; tests/test_adversarial_engines.py
starts one per engine, each in its own process, because Keras's backend is fixed per process.

    KERAS_BACKEND=<registry.KERAS_BACKEND[engine]> \
        python tests/workers/adversarial_worker.py JOB.json

JOB.json:
    {"engine": "torch",
     "inputs": "in.npz",        # w/<i> (canonical layout), x, dx, target
     "layers": [...],           # the classifier's architecture tuples
     "steps": 5, "eps": 0.1,    # the attacks' settings
     "output": "out"}           # writes out.npz (arrays) and out.json (everything else)

It reports the parity hook (attack_objective_and_grad) at the given dx and at dx = 0; attack()
with both methods (the lecture's in two batches); and both methods replayed
step by step in NumPy from the hook's gradients (the rules of customfit/tasks/adversarial/rules.py
applied by hand), so the test can tell an update rule's mistake from a gradient's.
"""

import importlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from customfit.tasks.adversarial import rules  # noqa: E402

MODULE = {
    "tensorflow": "with_tensorflow",
    "torch": "with_torch",
    "flax": "with_flax",
    "keras-tensorflow": "with_keras",
    "keras-torch": "with_keras",
    "keras-jax": "with_keras",
}


def replay(trainer, x, target, method, eps, steps):
    """The attack's rules in NumPy, driven by the engine's own gradients."""
    dx = np.zeros_like(x)
    alpha = rules.pgd_step_size(eps, steps)
    trajectory, grads = [dx], []
    for _ in range(steps):
        _, grad = trainer.attack_objective_and_grad(x, dx, target, method=method)
        if method == "pgd":
            dx = np.clip(dx - np.float32(alpha) * np.sign(grad), -np.float32(eps), np.float32(eps))
        else:
            dx = dx - np.float32(rules.LECTURE_STEP) * grad
        dx = np.clip(x + dx, 0.0, 1.0) - x
        trajectory.append(dx)
        grads.append(grad)
    return np.stack(trajectory), np.stack(grads)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    engine = job["engine"]
    with np.load(job["inputs"], allow_pickle=False) as saved:
        inputs = {key: saved[key] for key in saved.files}
    weights = [inputs[f"w/{i}"] for i in range(sum(1 for k in inputs if k.startswith("w/")))]
    x, dx, target = inputs["x"], inputs["dx"], inputs["target"]
    steps, eps = job["steps"], job["eps"]

    Trainer = importlib.import_module(f"customfit.tasks.adversarial.{MODULE[engine]}").Trainer
    trainer = Trainer(tuple(tuple(layer) for layer in job["layers"]), x.shape[1:], 10, 1e-3, 0)
    trainer.set_weights(weights)

    report, arrays = {"engine": engine, "keras_backend": os.environ.get("KERAS_BACKEND")}, {}
    started = time.perf_counter()
    for method in rules.METHODS:
        value, grad = trainer.attack_objective_and_grad(x, dx, target, method=method)
        report[f"value/{method}"] = value
        arrays[f"grad/{method}"] = grad
    value, grad = trainer.attack_objective_and_grad(x, np.zeros_like(x), target, method="lecture")
    report["value0/lecture"] = value
    arrays["grad0/lecture"] = grad
    report["weights_kept"] = all(
        np.array_equal(a, b) for a, b in zip(trainer.get_weights(), weights)
    )

    arrays["attack/pgd"] = trainer.attack(x, target, method="pgd", eps=eps, steps=steps)
    # The lecture's method ignores eps. In two batches: a pair's step must not depend on the
    # batch it shares (a mean over pairs would divide it by 8). Few shapes: each costs JAX a
    # compile.
    arrays["attack/lecture"] = trainer.attack(
        x, target, method="lecture", eps=None, steps=steps, batch_size=len(x) // 2
    )
    for method in rules.METHODS:
        arrays[f"replay/{method}/dx"], arrays[f"replay/{method}/grad"] = replay(
            trainer, x, target, method, eps, steps
        )
    report["weights_kept_after_attack"] = all(
        np.array_equal(a, b) for a, b in zip(trainer.get_weights(), weights)
    )
    try:
        trainer.attack(x, target, method="fgsm", eps=eps, steps=steps)
        report["bad_method"] = None
    except ValueError as error:
        report["bad_method"] = str(error)
    report["seconds"] = time.perf_counter() - started

    np.savez(job["output"] + ".npz", **arrays)
    with open(job["output"] + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
