"""adversarial: targeted perturbations of the trained digits CNN (exercise 2).

The run trains the digits default CNN (or starts from a finished `digits` run of the same engine,
--from DIR), then attacks every held-out digit toward each of its 9 wrong labels (3240 pairs),
batched. `pgd` (the default) is targeted projected gradient descent in the L-infinity ball of
radius --eps; `lecture` is the lecture's objective, cross-entropy to the target + c * mean|dx|,
from dx = 0 and with no norm bound (the lecture starts at X + noise, i.e. at 2X, and lets X + dX
leave [0, 1]: see shared/LECTURE.md). Both keep x + dx inside [0, 1].

The judge reads only the perturbed images and the model's probabilities on them.
"""

import functools
import io
import os

import numpy as np

from customfit.errors import CheckpointError, UsageError
from customfit.options import Option
from customfit.tasks.adversarial import rules
from customfit.tasks.classifier import task as classifier
from customfit.tasks.classifier.architectures import DIGITS_DEFAULT

NAME = "adversarial"
FAMILY = "adversarial"
SUMMARY = (
    "targeted perturbations of the digits CNN: each held-out digit toward each of its "
    "9 wrong labels (exercise 2)"
)
JUDGE = (
    "success rate: the share of (digit, target) pairs the model answers with the target, "
    "every x_adv inside [0, 1] and (pgd) within eps of x"
)
HEADLINE = "success_rate"
MODELS = {"default": DIGITS_DEFAULT}
DEFAULTS = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "seed": 0, "model": "default"}
BARS_BY_METHOD = {
    "pgd": {"success_rate": 0.95, "in_bounds": 1.0},
    "lecture": {"success_rate": 0.90, "in_bounds": 1.0},
}
# How far outside the eps ball or [0, 1] a float32 x_adv may be and still count as inside.
TOLERANCE = 1e-6
# Pairs attacked per call: a progress bar that moves, and memory that stays small.
CHUNK = 540
# The success-against-eps figure (pgd) attacks a fixed subset of the pairs at each of these.
SWEEP_EPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
SWEEP_PAIRS = 360
ALL_PAIRS = 360 * 9

OPTIONS = {
    "method": Option(
        "method",
        "choice",
        "pgd: targeted PGD in the L-infinity ball; lecture: cross-entropy + c mean|dx|, unbounded",
        default="pgd",
        choices=("pgd", "lecture"),
    ),
    "eps": Option(
        "eps",
        "float",
        "the L-infinity radius of pgd",
        default=0.3,
        low=0.0,
        high=1.0,
        low_open=True,
    ),
    "steps": Option(
        "steps",
        "int",
        "gradient steps of the attack",
        low=1,
        high=100_000,
        default=lambda o: rules.DEFAULT_STEPS[o["method"]],
        default_text=", ".join(f"{v} for {k}" for k, v in rules.DEFAULT_STEPS.items()),
    ),
    "pairs": Option(
        "pairs",
        "int",
        "attack this many of the pairs (a fixed sample); for quick runs",
        default=ALL_PAIRS,
        low=1,
        high=ALL_PAIRS,
    ),
    "from_run": Option(
        "from_run",
        "path",
        "start from the finished digits run in DIR (same engine) instead of training",
        flag="--from",
        pinned=False,
    ),
}

build_trainer = functools.partial(classifier.build_trainer, models=MODELS)
parity_inputs = classifier.parity_inputs  # the classifier it trains before attacking


def load():
    from customfit.data import digits_split

    return digits_split()


def bars(settings):
    return dict(BARS_BY_METHOD[settings["method"]])


# ----------------------------------------------------------------------------- starting point


# The option naming the digits run that start_from reads (--from).
START_OPTION = "from_run"


def start_from(options, engine):
    """The checkpoint of a finished digits run of `engine` (default model) in options["from_run"],
    or None when --from is not given."""
    folder = options.get("from_run")
    if folder is None:
        return None
    from customfit import checkpoint

    path = os.path.join(folder, "checkpoint.safetensors")
    expected = f"a folder holding a finished digits run of engine {engine} (default model)"
    if not os.path.exists(path):
        raise UsageError.expected(
            "from_run", expected, given=f"{folder!r}, which has no checkpoint"
        )
    try:
        arrays, meta = checkpoint.load(path)
    except CheckpointError as e:
        raise UsageError.expected("from_run", expected, given=f"{path}: {e.message}") from None
    config = meta.get("config") or {}
    found = (meta.get("task"), meta.get("engine"), meta.get("model"))
    if found != ("digits", engine, "default"):
        raise UsageError.expected(
            "from_run",
            expected,
            given=f"{folder!r}, a {found[0]} run of engine {found[1]}, model {found[2]}",
        )
    if meta.get("epoch") != config.get("epochs"):
        raise UsageError.expected(
            "from_run",
            expected,
            given=f"{folder!r}, which stopped after "
            f"epoch {meta.get('epoch')} of {config.get('epochs')}",
        )
    return arrays, meta


# ----------------------------------------------------------------------------- the attack


def pairs(split, count=ALL_PAIRS):
    """Every held-out digit toward each of its 9 wrong labels, in (digit, target) order, or a
    fixed sample of `count` of them (always the same for the same count). Returns the held-out
    digits' indices, their labels and the targets."""
    n = len(split.y_test)
    index = np.repeat(np.arange(n), 9)
    offset = np.tile(np.arange(1, 10), n)
    label = split.y_test[index]
    target = (label + offset) % 10
    if count < len(index):
        keep = np.sort(np.random.default_rng(0).choice(len(index), size=count, replace=False))
        index, label, target = index[keep], label[keep], target[keep]
    return index, label.astype(np.int64), target.astype(np.int64)


def _attack(trainer, x, target, method, eps, steps, verbose, what):
    from tqdm.auto import tqdm

    done = []
    with tqdm(
        total=len(x),
        desc=what,
        unit="pair",
        disable=not verbose,
        leave=True,
        dynamic_ncols=True,
        mininterval=0.1,
    ) as bar:
        for start in range(0, len(x), CHUNK):
            done.append(
                np.asarray(
                    trainer.attack(
                        x[start : start + CHUNK],
                        target[start : start + CHUNK],
                        method=method,
                        eps=eps,
                        steps=steps,
                    ),
                    dtype=np.float32,
                )
            )
            bar.update(len(done[-1]))
    return np.concatenate(done)


def produce(trainer, split, settings, verbose=False):
    method, eps, steps = settings["method"], settings["eps"], settings["steps"]
    index, label, target = pairs(split, settings["pairs"])
    x = split.x_test[index]
    what = f"attack ({method}" + (f", eps {eps:g}" if method == "pgd" else "") + f", {steps} steps)"
    x_adv = _attack(trainer, x, target, method, eps, steps, verbose, what)
    outputs = {
        "x": x,
        "x_adv": x_adv,
        "label": label,
        "target": target,
        "index": index,
        "proba": np.asarray(trainer.predict_proba(x_adv), dtype=np.float64),
        "clean_proba": np.asarray(trainer.predict_proba(split.x_test), dtype=np.float64),
    }
    if method == "pgd":
        n = min(SWEEP_PAIRS, len(x))
        sweep = [
            _attack(
                trainer,
                x[:n],
                target[:n],
                method,
                e,
                steps,
                verbose,
                f"success against eps ({e:g})",
            )
            for e in SWEEP_EPS
        ]
        outputs["sweep_eps"] = np.asarray(SWEEP_EPS)
        outputs["sweep_proba"] = np.stack([trainer.predict_proba(a) for a in sweep])
        outputs["sweep_target"] = target[:n]
    return outputs


# ----------------------------------------------------------------------------- the judge


def judge(outputs, split, settings):
    x, x_adv, target, proba = outputs["x"], outputs["x_adv"], outputs["target"], outputs["proba"]
    pgd = settings["method"] == "pgd"
    n = len(x)
    dx = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(n, -1)
    linf = np.abs(dx).max(axis=1)
    inside_box = ((x_adv >= -TOLERANCE) & (x_adv <= 1 + TOLERANCE)).reshape(n, -1).all(axis=1)
    within = linf <= settings["eps"] + TOLERANCE if pgd else np.ones(n, bool)
    clean = outputs["clean_proba"].argmax(axis=1) == split.y_test
    metrics = {
        "success_rate": float(np.mean(proba.argmax(axis=1) == target)),
        "eps": settings["eps"] if pgd else None,
        "mean_linf": float(linf.mean()),
        "max_linf": float(linf.max()),
        "mean_l2": float(np.sqrt((dx**2).sum(axis=1)).mean()),
        "mean_target_probability": float(proba[np.arange(n), target].mean()),
        "clean_accuracy": float(clean.mean()),
        "in_bounds": float(np.mean(inside_box & within)),
        "pairs": int(n),
    }
    if pgd:
        hits = outputs["sweep_proba"].argmax(axis=2) == outputs["sweep_target"][None]
        metrics["success_by_eps"] = {
            f"{e:g}": float(h.mean()) for e, h in zip(outputs["sweep_eps"], hits)
        }
    return metrics


# ----------------------------------------------------------------------------- what it writes


def write(outputs, trainer, split, history, out, title):
    from customfit import checkpoint
    from customfit.tasks.adversarial import figures

    buffer = io.BytesIO()
    np.savez(buffer, **{k: outputs[k] for k in ("x", "x_adv", "label", "target", "proba")})
    path = os.path.join(out, "perturbations.npz")
    checkpoint.atomic_write(path, buffer.getvalue())
    paths = {
        "perturbations": path,
        "perturbation": figures.one_digit(outputs, os.path.join(out, "perturbation.png"), title),
    }
    paths["success_vs_eps"] = figures.success_against_eps(
        outputs, os.path.join(out, "success_vs_eps.png"), title
    )
    return paths
