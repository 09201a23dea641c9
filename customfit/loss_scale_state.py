"""The loss scales of a float16 run, kept in its checkpoint: a resumed run goes on with the
scale it had learned, as one that never stopped does, instead of starting again at 2**15 and
skipping its first steps again while the scale falls.

Found on a Trainer without its help: torch's `GradScaler`s among its attributes (enabled only
under float16), and Keras's `LossScaleOptimizer`s as its attributes or as its Keras model's
optimizer (each member of a cf.Model's optimizer group has its own). Under float32 and bfloat16
there are none, and the checkpoint is as it was. Imports no framework."""

import sys

import numpy as np

PREFIX = "loss_scale/"


def _keras_loss_scalers():
    keras = sys.modules.get("keras")
    return () if keras is None else (keras.optimizers.LossScaleOptimizer,)


def _is_grad_scaler(value):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.amp.GradScaler) and value.is_enabled()


def scalers(trainer):
    """name -> each GradScaler or LossScaleOptimizer the trainer trains with, in a fixed order."""
    keras_kind = _keras_loss_scalers()
    candidates = []
    for name, value in sorted(vars(trainer).items()):
        candidates.append((name, value))
        optimizer = getattr(value, "optimizer", None) if keras_kind else None
        if optimizer is not None and type(value).__module__.split(".")[0] != "torch":
            candidates.append((f"{name}.optimizer", optimizer))
    found = {}
    for name, value in candidates:
        if _is_grad_scaler(value) or (keras_kind and isinstance(value, keras_kind)):
            found[name] = value
        members = getattr(value, "members", None)  # cf.Model's OptimizerGroup
        if keras_kind and hasattr(members, "items"):
            for key, member in sorted(members.items()):
                if isinstance(member, keras_kind):
                    found[f"{name}.{key}"] = member
    return found


def arrays(trainer):
    """{loss_scale/<name>/scale, loss_scale/<name>/growth}: each scaler's scale and its count of
    good steps since the scale last changed."""
    saved = {}
    for name, scaler in scalers(trainer).items():
        if _is_grad_scaler(scaler):
            state = scaler.state_dict()
            scale, growth = state.get("scale", scaler.get_scale()), state.get("_growth_tracker", 0)
        else:
            numpy = sys.modules["keras"].ops.convert_to_numpy
            scale, growth = numpy(scaler.dynamic_scale.value), numpy(scaler.step_counter.value)
        saved[f"{PREFIX}{name}/scale"] = np.asarray(scale, np.float32)
        saved[f"{PREFIX}{name}/growth"] = np.asarray(growth, np.int64)
    return saved


def restore(trainer, saved):
    """Put arrays()'s scales back into `trainer`'s scalers; a checkpoint without them (float32,
    bfloat16, or written before they were kept) leaves the scalers at their start."""
    for name, scaler in scalers(trainer).items():
        key = f"{PREFIX}{name}"
        if f"{key}/scale" not in saved:
            continue
        scale, growth = float(saved[f"{key}/scale"]), int(saved[f"{key}/growth"])
        if _is_grad_scaler(scaler):
            scaler.load_state_dict(
                {**scaler.state_dict(), "scale": scale, "_growth_tracker": growth}
            )
        else:
            scaler.dynamic_scale.assign(scale)
            scaler.step_counter.assign(growth)
