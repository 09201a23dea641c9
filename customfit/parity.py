"""The parity probe behind the report: one objective's value and gradients on one engine, from
weights and a batch that every engine shares.

`python -m customfit.parity TASK ENGINE WEIGHTS.npz RESULT.npz` (in a process whose Keras backend
is the engine's): builds the task's trainer with its default settings, takes its weights from
WEIGHTS.npz (or, when the file does not exist yet, writes its own there, nudged: the first
engine's become everyone's), and writes to RESULT.npz what the trainer's parity hook (objective_and_grads)
returns for the spec's parity_inputs(split, settings): a batch and the noise it draws. compare()
then gives each engine's largest difference to the first, relative to the first's size. A task
whose spec has no parity_inputs is not probed.
"""

import os
import sys

import numpy as np


def _flatten(tree, prefix=""):
    """{path: array} from nested dicts, lists and tuples of numbers and arrays."""
    if isinstance(tree, dict):
        items = sorted(tree.items())
    elif isinstance(tree, (list, tuple)):
        items = list(enumerate(tree))
    else:
        return {prefix or "value": np.asarray(tree, np.float64)}
    flat = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def _unflatten_like(tree, flat, prefix=""):
    if isinstance(tree, dict):
        return {
            k: _unflatten_like(v, flat, f"{prefix}/{k}" if prefix else str(k))
            for k, v in tree.items()
        }
    if isinstance(tree, (list, tuple)):
        return type(tree)(
            _unflatten_like(v, flat, f"{prefix}/{i}" if prefix else str(i))
            for i, v in enumerate(tree)
        )
    return np.asarray(flat[prefix or "value"], dtype=np.asarray(tree).dtype)


def probe(task, engine, weights_path, result_path):
    from customfit import registry

    spec = registry.spec(task)
    parity_inputs = registry.hook(spec, "parity_inputs")
    if parity_inputs is None:
        return False
    settings = registry.defaults(spec, spec.DEFAULTS["model"])
    from customfit import options

    settings.update(options.resolve(spec, {}))
    split = spec.load()
    trainer = spec.build_trainer(registry.trainer_class(task, engine), split, settings)
    own = trainer.get_weights()
    if not os.path.exists(weights_path):
        # Nudged off the initial zeros: at a ReLU's kink (a zero bias on a zero pixel) each
        # framework picks its own subgradient, and parity is about everything else.
        rng = np.random.default_rng(0)
        np.savez(
            weights_path,
            **{
                k: v + rng.normal(0.0, 0.01, v.shape).astype(v.dtype)
                for k, v in _flatten(own).items()
            },
        )
    with np.load(weights_path) as shared:
        trainer.set_weights(_unflatten_like(own, dict(shared)))
    batch, noise = parity_inputs(split, settings)
    np.savez(result_path, **_flatten(trainer.objective_and_grads(batch, noise)))
    return True


def compare(results):
    """{engine: the largest ||difference|| / ||value|| over the first engine's arrays}."""
    engines = list(results)
    reference = results[engines[0]]
    out = {}
    for engine in engines:
        worst = 0.0
        for name, ref in reference.items():
            mine = results[engine].get(name)
            if mine is None or mine.shape != ref.shape:
                worst = float("inf")
                break
            scale = max(float(np.linalg.norm(ref)), 1e-12)
            worst = max(worst, float(np.linalg.norm(mine - ref)) / scale)
        out[engine] = worst
    return out


if __name__ == "__main__":
    task, engine, weights, result = sys.argv[1:5]
    from customfit import registry

    os.environ["KERAS_BACKEND"] = registry.KERAS_BACKEND[engine]
    sys.exit(0 if probe(task, engine, weights, result) else 3)
