"""What toy and digits share as tasks (see customfit.protocol, the spec contract): how
their Trainer is built, what the judge reads, the judge, and the figures. Imports no framework.

The judge reads only the model's probabilities on the held-out inputs and computes accuracy and
cross-entropy with NumPy: it shares no code with the engine it judges.
"""

import os

import numpy as np

HEADLINE = "accuracy"
OPTIONS = {}


def fixed_bars(bars):
    """The bars(settings) hook of a task whose bars are the same whatever its settings."""
    return lambda settings: dict(bars)


def build_trainer(trainer_class, split, settings, models):
    return trainer_class(
        models[settings["model"]],
        split.input_shape,
        split.num_classes,
        settings["lr"],
        settings["seed"],
        devices=settings.get("devices", 1),
    )


# Inputs per predict_proba call: a whole MNIST test set at once would hold a gigabyte of
# first-layer activations.
_CHUNK = 1000


def _predict_in_chunks(predict_proba):
    def predict(x):
        return np.concatenate(
            [
                np.asarray(predict_proba(x[i : i + _CHUNK]), dtype=np.float64)
                for i in range(0, len(x), _CHUNK)
            ]
        )

    return predict


def parity_inputs(split, settings):
    """The batch the report's parity probe (customfit.parity) gives every engine."""
    x, y = split.train
    return (x[:16], y[:16]), None


def produce(trainer, split, settings, verbose=False):
    return {"proba": _predict_in_chunks(trainer.predict_proba)(split.x_test)}


def judge(outputs, split, settings):
    """Held-out accuracy and cross-entropy from the model's probabilities alone."""
    proba, y_test = outputs["proba"], split.y_test
    if proba.shape != (len(split.x_test), split.num_classes):
        raise RuntimeError(
            f"predict_proba gave shape {proba.shape}; "
            f"expected {(len(split.x_test), split.num_classes)}"
        )
    accuracy = float(np.mean(proba.argmax(axis=1) == y_test))
    picked = np.clip(proba[np.arange(len(y_test)), y_test], 1e-12, 1.0)
    return {"accuracy": accuracy, "loss": float(-np.mean(np.log(picked)))}


def write(outputs, trainer, split, history, out, title):
    """decision_regions.png for 2-D inputs (toy), probabilities.png for images (digits)."""
    from customfit import plots

    if split.input_shape == (2,):
        return {
            "decision_regions": plots.decision_regions(
                trainer.predict_proba,
                split.x_train,
                split.y_train,
                split.x_test,
                split.y_test,
                os.path.join(out, "decision_regions.png"),
                num_classes=split.num_classes,
            )
        }
    if len(split.input_shape) == 3:
        return {
            "probabilities": plots.probabilities(
                _predict_in_chunks(trainer.predict_proba),
                split.x_test,
                split.y_test,
                os.path.join(out, "probabilities.png"),
                num_classes=split.num_classes,
                title=title,
            )
        }
    return {}
