"""One backend's side of `customfit compare`, in a process of its own (the parent sets
KERAS_BACKEND; for the float64 reference, KERAS_BACKEND=jax and CUSTOMFIT_COMPARE_FLOAT64=1):

    python -m customfit.comparison.worker REQUEST.json

REQUEST.json: {"file", "factory", "batch", "weights", "builds_weights", "result", "seed",
"steps", "timing_gate", "timing_lock"}. The process builds the factory's model, writes the
starting weights (the first backend) or waits for them, loads them, writes RESULT.npz (the
numbers, probe.py), then times fit() once the parent opens the gate (every backend's numbers
done), one backend at a time (a lock file), and ends with RESULT.json (the numbers' keys, the
speed).
A user's mistake is written as {"usage_error": "..."} to RESULT.json, exit status 2."""

import fcntl
import importlib.util
import json
import os
import sys
import time
import traceback

FLOAT64 = os.environ.get("CUSTOMFIT_COMPARE_FLOAT64") == "1"


class FactoryError(Exception):
    """The factory, or the batch given to its model, is not what compare needs."""


def _framework():
    if FLOAT64:
        import jax

        jax.config.update("jax_enable_x64", True)
    import keras

    if FLOAT64:
        keras.config.set_floatx("float64")
    return keras


def load_model(path, name):
    import customfit as cf

    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the factory's own imports of its neighbours
    spec = importlib.util.spec_from_file_location("customfit_compare_factory", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        factory = getattr(module, name)
        # FACTORY may name a model itself (a cf.Model is callable too: not to be called here)
        model = factory if isinstance(factory, cf.Model) else factory()
    except Exception as e:
        raise FactoryError(
            f"target: expected {os.path.basename(path)} to build a model; it raised "
            f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        ) from None
    if not isinstance(model, cf.Model):
        raise FactoryError(
            f"target: expected {name} to return a cf.Model; got {type(model).__name__}"
        )
    if not model.compiled:
        model.compile(optimizer="adam")
    return model


def batch(path, keras):
    """fit()'s arrays (floats in floatx, as fit() casts them), and the batch fit() hands over."""
    import numpy as np

    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for name, array in arrays.items():
        if array.dtype.kind == "f":
            arrays[name] = array.astype(keras.config.floatx())
    packed = tuple(arrays.get(k) for k in ("x", "y", "sample_weight"))
    while packed[-1] is None:
        packed = packed[:-1]
    return arrays, packed


def build(model, packed, keras):
    from customfit.core.model import build_train_step

    tensors = tuple(None if a is None else keras.ops.convert_to_tensor(a) for a in packed)
    try:
        build_train_step(model, tensors)
    except Exception as e:
        raise FactoryError(
            f"data: expected arrays that fit the model; its objective raised "
            f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        ) from None
    return tensors[0] if len(tensors) == 1 else tensors


def _wait_for(path, seconds=600):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def _write_json(path, content):
    with open(path + ".partial", "w") as f:
        json.dump(content, f)
    os.replace(path + ".partial", path)


def main(request_path):
    with open(request_path) as f:
        job = json.load(f)
    keras = _framework()
    import numpy as np

    from customfit.comparison import noise, probe, speed, weights

    report = {"backend": keras.backend.backend(), "float64": FLOAT64}
    try:
        model = load_model(job["file"], job["factory"])
        arrays, packed = batch(job["batch"], keras)
        data = build(model, packed, keras)
    except FactoryError as e:
        _write_json(job["result"] + ".json", {**report, "usage_error": str(e)})
        return 2
    if job["builds_weights"]:
        weights.save(model, job["weights"])
    _wait_for(job["weights"])
    weights.load(model, job["weights"])
    found = probe.numbers(model, data, noise.Draws(job["seed"]))
    report["keys"] = sorted(found)
    with open(job["result"] + ".npz.partial", "wb") as f:
        np.savez(f, *[found[k] for k in report["keys"]])
    os.replace(job["result"] + ".npz.partial", job["result"] + ".npz")  # the parent's signal
    if job["steps"]:
        _wait_for(job["timing_gate"])
        with open(job["timing_lock"], "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one backend timed at a time: no one else's load
            report["speed"] = speed.measure(model, arrays, job["steps"])
    _write_json(job["result"] + ".json", report)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.exit(main(sys.argv[1]))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
