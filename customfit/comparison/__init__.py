"""`customfit compare` / `cf.compare()`: does a cf.Model compute the same numbers on the
tensorflow, torch and jax backends, and which of them trains it fastest?

Everything a user gives is checked first (inputs.py), before any framework starts; then each
backend runs in its own process (worker.py) from the same starting weights (weights.py) and the
same random draws (noise.py); the numbers (probe.py) are compared (diff.py) with a float64
reference where one can be computed, the train step is timed as fit() runs it (speed.py), and the
result (result.py) gives the table, the verdict and the JSON."""

import json
import os

from customfit import validate
from customfit.comparison import inputs
from customfit.comparison.result import NOISE, REFERENCE, Comparison
from customfit.errors import UsageError

__all__ = ["compare", "Comparison"]


def compare(target, data, backends=inputs.BACKENDS, rtol=1e-4, steps=50, json_path=None, seed=0):
    """Run one cf.Model on several Keras backends and compare its numbers and speed.

    Args:
        target: "FILE.py:FACTORY": a function (or class) in FILE.py returning a cf.Model,
            compiled or not (compare compiles it with Adam where not).
        data: an .npz holding the arrays fit() would get: `x`, and `y` and `sample_weight`
            where the model takes them; the whole file is one batch.
        backends: Keras backends among tensorflow, torch, jax.
        rtol: the largest relative difference that still agrees.
        steps: timed training steps per backend (after warm-up); 0 times nothing.
        json_path: where to write the JSON of everything, or None.
        seed: the seed of the random draws every backend shares.

    Returns:
        A `Comparison` (`.agree`, `.exit_status`, `.worst`, `.speed`, `.fastest`, `.table()`,
        `.verdict()`, `.to_json()`).

    Raises:
        customfit.errors.UsageError: a missing file or factory, a factory that does not return a
            cf.Model, arrays that do not fit the model, a backend not installed; nothing written.

    Example:
        ```python
        result = cf.compare("my_model.py:build", "batch.npz", backends=["torch", "jax"])
        print(result.table()); print(result.verdict())
        ```
    """
    from customfit.comparison import diff, launch

    found = inputs.target(target)
    arrays = inputs.batch(data)
    backends = inputs.backends(backends)
    rtol = validate.positive_float("rtol", rtol)
    steps = 0 if steps == 0 else validate.positive_int("steps", steps)
    seed = validate.seed("seed", seed)
    if json_path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise UsageError.expected(
            "json",
            "a file in an existing folder",
            given=f"{json_path!r}, whose folder does not exist",
        )
    outcomes, reference = launch.run(found, arrays, backends, steps, seed)
    errors = {b: o["error"] for b, o in outcomes.items() if "error" in o}
    numbers = {b: o["numbers"] for b, o in outcomes.items() if "numbers" in o}
    if "numbers" in reference:
        worst, table = diff.compare(numbers, reference["numbers"])
        against = REFERENCE
    else:
        errors["float64"] = reference["error"]
        worst, table = diff.compare(numbers)
        against = f"each other (no float64 reference: {reference['error'][:120]})"
    sides = {**numbers, **({"float64": reference["numbers"]} if "numbers" in reference else {})}
    result = Comparison(
        backends=backends,
        rtol=rtol,
        against=against,
        noise=NOISE.format(seed=seed),
        worst=worst,
        differences=table,
        objective={
            s: {k: float(v) for k, v in found_.items() if "/gradient/" not in k and v.size == 1}
            for s, found_ in sides.items()
        },
        speed={b: o.get("speed") for b, o in outcomes.items() if "numbers" in o},
        errors=errors,
    )
    if json_path is not None:
        with open(json_path, "w") as f:
            json.dump(result.to_json(), f, indent=1)
    return result
