"""score: score models and Langevin sampling on the toy clusters (the lecture's exercise 9).

Methods (--method; the rules every engine follows are in customfit/tasks/score/layout.py):
  lecture  the lecture's: an MLP 2-32-32-2 with softplus, trained on plain score matching,
           mean |s(x)|^2 + 2 div s(x), with the exact divergence (--divergence hutchinson: its
           sliced estimate); then Langevin sampling x <- x + eps s(x) + sqrt(2 eps T) xi from
           N(0, std(data)^2 I) (the lecture's start), eps 0.01, T 1, 50 steps.
  dsm      the default: denoising score matching over 20 noise levels, geometric from 4 to 0.05,
           with a noise-conditional MLP s(x, sigma) = net([x, log sigma]) / sigma (3 hidden
           layers of 128, silu), and annealed Langevin sampling: 20 steps per level of size
           0.2 sigma_i^2 from N(0, 4^2 I), then one denoising step x + sigma_L^2 s(x, sigma_L).
           The learning rate decays along a cosine to 0 over the run's --epochs.

Plain score matching cannot weigh modes that empty space separates: its loss only sees the data,
so the score between clusters, which decides where a Langevin walker goes, is left to chance, and
long runs drift to the wrong cluster weights. Noise that fills the space between clusters (the
large levels) is the standard remedy.

The judge (customfit/tasks/score/judge.py, the project's own): the energy distance between the
samples and fresh data from the same clusters (with the data-vs-data figure beside it), the share
of samples within 3 sigma of some centre, each cluster's share. Every run samples twice with the
run's seed: with --sampling-steps (the run's samples.npy, GIF and headline figures) and with 10
times as many (the *_10x figures: the long run that shows drift).

Both methods train batches of 512 with Adam at 2e-3: lecture 800 epochs at a constant rate, dsm
1600 along a cosine to 0 over the run's --epochs (a resumed run given more epochs stretches the
rest of it).
Measured (2 cores) while choosing them, prototypes in Flax on this data:
- lecture: 20 epochs of batch 16 at the lecture's lr 1e-2 left energy distances 0.04-0.16 at 50
  steps over seeds 0-3 (its loss, unbounded below, jumps about as in the lecture's printout);
  800 epochs of batch 512 at 2e-3 gave 0.040-0.057 at 50 steps and 0.11-0.19 at 500 (seeds 0-2).
- dsm: with the exact score of the clusters this sampler gives 0.001-0.011 (20 steps a level)
  and 0.001-0.004 (200). The learned score decides the rest: at a constant rate it stayed 2-5%
  off at the middle levels, enough for 200 steps a level to drift to 0.08-0.3; with the cosine
  decay, 400 epochs of batch 128 gave 0.002-0.015 at 200 steps (and two of six engines just
  over the bars), 800 epochs of batch 512 gave 0.001-0.004 at both lengths over seeds 1-6, every
  cluster's share within 0.165-0.24. 10 levels, or steps of 0.1 or 0.5 sigma^2, did worse.
- dsm, 800 -> 1600 epochs: at 800, seed 0 left the smallest cluster share at 200 steps a level
  at 0.135 (keras-torch) and 0.153 (torch), the other engines 0.172-0.192. 200 steps a level
  let walkers cross between the two nearest clusters (0.94 apart) down to sigma ~0.1, so the
  long run settles to the network's own relative mass of the two, which the noisy small-sigma
  part of the loss learns slowly. 1600 epochs (torch / keras-torch): seed 0 0.193 / 0.170,
  seed 1 0.184 / 0.186 (at 800: 0.188 / 0.176), energy distance at 200 steps 0.002-0.003.
  Not adopted: sampling with an EMA of the weights (momentum 0.99-0.9995, Keras's rule or with
  the (1 + t) / (10 + t) warm-up): the cosine has the rate near 0 for the last thousand steps,
  so an EMA equals the final weights except for the share m^4800 of the first step's weights it
  keeps (0.8% at 0.999: keras-torch 0.135 -> 0.162, but its largest share went to 0.253; 9% at
  0.9995: 0.013); the ladder stopped at sigma 0.1: keras-torch 0.153, keras-jax 0.191 -> 0.173.
"""

import math
import os

import numpy as np

from customfit.errors import UsageError
from customfit.options import Option
from customfit.tasks.score import figures
from customfit.tasks.score import judge as score_judge
from customfit.tasks.score import layout

NAME = "score"
FAMILY = "score"
SUMMARY = (
    "score models on the toy clusters and Langevin sampling: the lecture's score matching "
    "(exercise 9) and denoising score matching with annealed Langevin"
)
JUDGE = (
    "energy distance of the samples to fresh data from the clusters (and of fresh data, for "
    "scale), share within 3 sigma of a centre, each cluster's share; again at 10x the steps"
)
HEADLINE = "energy_distance"
MODELS = {
    "default": "the method's network (lecture: 2-32-32-2 softplus; dsm: [x, log sigma] "
    "3-128-128-128-2 silu)"
}
DEFAULTS = {"epochs": 1600, "batch_size": 512, "lr": 2e-3, "seed": 0, "model": "default"}
EPOCHS_BY_METHOD = {"dsm": 1600, "lecture": 800}
NETWORK = {"lecture": "lecture", "dsm": "toy"}
LONGER = 10  # the judge's second sampling: this many times the steps
METHOD_DEFAULTS = {
    "lecture": {"sampling_steps": 50, "step_size": 0.01},
    "dsm": {
        "sampling_steps": 20,
        "step_size": 0.2,
        "noise_levels": 20,
        "sigma_max": 4.0,
        "sigma_min": 0.05,
    },
}
DSM_ONLY = ("noise_levels", "sigma_max", "sigma_min")


def _default(name):
    return lambda o: METHOD_DEFAULTS[o["method"]].get(name)


def _default_text(name):
    return ", ".join(
        f"{v[name]:g} for --method {m}" for m, v in METHOD_DEFAULTS.items() if name in v
    )


def _by_method(name, kind, help, **bounds):
    """An option whose default is METHOD_DEFAULTS's for the run's --method."""
    return Option(
        name, kind, help, default=_default(name), default_text=_default_text(name), **bounds
    )


OPTIONS = {
    "method": Option(
        "method",
        "choice",
        "dsm: denoising score matching over noise levels, "
        "annealed Langevin, 1600 epochs by default; lecture: the lecture's score "
        "matching and Langevin, 800 epochs by default",
        default="dsm",
        choices=layout.METHODS,
    ),
    "divergence": Option(
        "divergence",
        "choice",
        "the lecture's divergence: exact (the Jacobian's "
        "trace) or hutchinson (sliced, one probe a sample); --method lecture only",
        choices=layout.DIVERGENCES,
        default=lambda o: "exact" if o["method"] == "lecture" else None,
        default_text="exact for --method lecture",
    ),
    "sampling_steps": _by_method(
        "sampling_steps",
        "int",
        "Langevin steps (dsm: per noise level)",
        low=1,
        high=100_000,
        pinned=False,
    ),
    "samples": Option(
        "samples",
        "int",
        "samples to draw (and judge)",
        default=2000,
        low=10,
        high=100_000,
        pinned=False,
    ),
    "step_size": _by_method(
        "step_size",
        "float",
        "Langevin step eps (dsm: eps_i = step * sigma_i^2 at noise level i)",
        low=0.0,
        high=10.0,
        low_open=True,
        pinned=False,
    ),
    "noise_levels": _by_method(
        "noise_levels", "int", "how many noise levels (dsm only)", low=1, high=1000
    ),
    "sigma_max": _by_method(
        "sigma_max",
        "float",
        "the largest noise level (dsm only)",
        low=0.0,
        high=100.0,
        low_open=True,
    ),
    "sigma_min": _by_method(
        "sigma_min",
        "float",
        "the smallest noise level (dsm only)",
        low=0.0,
        high=100.0,
        low_open=True,
    ),
}

_BARS_DSM = {
    "energy_distance": ("<=", 0.02),
    "within_3sigma": 0.95,
    "cluster_share_min": 0.15,
    "cluster_share_max": ("<=", 0.25),
}
BARS_BY_METHOD = {
    "dsm": {**_BARS_DSM, **{f"{k}_10x": v for k, v in _BARS_DSM.items()}},
    "lecture": {"energy_distance": ("<=", 0.15)},
}
FRAMES = 50  # the animation's frames at most
FIELD_SIDE = 25  # the score field's arrows: a FIELD_SIDE x FIELD_SIDE grid


def training_defaults(options):
    """How many epochs a run trains unless --epochs says: dsm twice the lecture's (the docstring
    above says why)."""
    return {"epochs": EPOCHS_BY_METHOD[options["method"]]}


def load():
    from customfit.data import Split, toy_split

    split = toy_split()
    return Split(split.x_train, None, split.x_test, None)


def bars(settings):
    return dict(BARS_BY_METHOD[settings["method"]])


def check(settings):
    """The options that only one method takes, and the noise ladder's order: a UsageError."""
    method = settings["method"]
    if method == "lecture":
        for name in DSM_ONLY:
            if settings.get(name) is not None:
                raise UsageError.expected(
                    name, "no value with --method lecture (a dsm option)", settings[name]
                )
    elif settings.get("divergence") is not None:
        raise UsageError.expected(
            "divergence",
            "no value with --method dsm (denoising score matching takes no divergence)",
            settings["divergence"],
        )
    else:
        if settings["sigma_min"] >= settings["sigma_max"] and settings["noise_levels"] > 1:
            raise UsageError.expected(
                "sigma_min",
                f"a number below --sigma-max ({settings['sigma_max']:g})",
                settings["sigma_min"],
            )


def sigmas(settings):
    if settings["method"] != "dsm":
        return None
    return layout.noise_levels(
        settings["sigma_max"], settings["sigma_min"], settings["noise_levels"]
    )


def build_trainer(trainer_class, split, settings):
    check(settings)
    dsm = settings["method"] == "dsm"
    steps_per_epoch = math.ceil(len(split.x_train) / settings["batch_size"])
    return trainer_class(
        settings["method"],
        NETWORK[settings["method"]],
        settings["lr"],
        settings["seed"],
        sigmas=sigmas(settings),
        divergence=settings["divergence"],
        decay_steps=settings["epochs"] * steps_per_epoch if dsm else None,
    )


# ----------------------------------------------------------------------------- what it makes


def start_std(split, settings):
    """The Gaussian start's spread: the lecture's np.std(X); for dsm the largest noise level."""
    return (
        float(np.std(split.x_train))
        if settings["method"] == "lecture"
        else float(sigmas(settings)[0])
    )


def frame_steps(total, frames=FRAMES):
    """Which of `total` steps the animation shows: all, or `frames` evenly spaced, the last included."""
    if total <= frames:
        return list(range(1, total + 1))
    return sorted(set(int(round(k * total / frames)) for k in range(1, frames + 1)))


def frame_labels(steps, settings):
    """'step t of N' and, for dsm, the noise level of that step."""
    per_level = settings["sampling_steps"]
    ladder = sigmas(settings)
    total = per_level * (1 if ladder is None else len(ladder))
    labels = []
    for t in steps:
        label = f"step {t} of {total}"
        if ladder is not None:
            level = (t - 1) // per_level
            label += f", level {level + 1}/{len(ladder)} (sigma {ladder[level]:.3g})"
        labels.append(label)
    return labels


def field_grid(side=FIELD_SIDE):
    """The score field's points: a side x side grid inside the figures' window, row-major."""
    (x0, x1), (y0, y1) = figures.XLIM, figures.YLIM
    xx, yy = np.meshgrid(
        np.linspace(x0 + 0.1, x1 - 0.1, side, dtype=np.float32),
        np.linspace(y0 + 0.1, y1 - 0.1, side, dtype=np.float32),
    )
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def field_levels(settings):
    """The noise levels the score-field figure shows: none (lecture), or the middle and the last."""
    ladder = sigmas(settings)
    if ladder is None:
        return [None]
    return sorted({(len(ladder) - 1) // 2, len(ladder) - 1})


def produce(trainer, split, settings, verbose=False):
    n, steps, step = settings["samples"], settings["sampling_steps"], settings["step_size"]
    seed, start = settings["seed"], start_std(split, settings)
    levels = 1 if settings["method"] == "lecture" else settings["noise_levels"]
    shown = frame_steps(steps * levels)
    samples, frames = trainer.sample(n, seed, steps, step, start, record=shown)
    longer, _ = trainer.sample(n, seed, LONGER * steps, step, start)
    grid = field_grid()
    ladder = sigmas(settings)
    return {
        "samples": np.asarray(samples, np.float32),
        "frames": np.asarray(frames, np.float32),
        "frame_steps": np.asarray(shown, np.int64),
        "samples_10x": np.asarray(longer, np.float32),
        "grid": grid,
        "fields": np.stack(
            [np.asarray(trainer.score(grid, level), np.float32) for level in field_levels(settings)]
        ),
        "field_sigmas": np.asarray(
            [np.nan if level is None else ladder[level] for level in field_levels(settings)],
            np.float64,
        ),
        "frame_labels": np.asarray(frame_labels(shown, settings)),
        "denoised": np.asarray(settings["method"] == "dsm"),
    }


# ----------------------------------------------------------------------------- the judge


def judge(outputs, split, settings):
    metrics = score_judge.judge(outputs["samples"])
    longer = score_judge.judge(outputs["samples_10x"])
    metrics.update({f"{k}_10x": v for k, v in longer.items() if k != "data_energy_distance"})
    steps = settings["sampling_steps"]
    metrics["sampling_steps_10x"] = LONGER * steps
    return metrics


# ----------------------------------------------------------------------------- what it writes


def write(outputs, trainer, split, history, out, title):
    from customfit import checkpoint

    path = checkpoint.atomic_save_npy(
        os.path.join(out, "samples.npy"), np.asarray(outputs["samples"], np.float32)
    )
    data = split.x_train
    figures_now = score_judge.judge(outputs["samples"])
    frames, labels = list(outputs["frames"]), [str(label) for label in outputs["frame_labels"]]
    if outputs["denoised"]:
        frames.append(outputs["samples"])
        labels.append("denoised: the samples")
    sigma_labels = [
        "s(x)" if np.isnan(s) else f"s(x, sigma={s:.3g})" for s in outputs["field_sigmas"]
    ]
    return {
        "samples": path,
        "animation": figures.animation(
            np.asarray(frames), labels, data, os.path.join(out, "langevin.gif")
        ),
        "scatter": figures.scatter(
            outputs["samples"],
            data,
            os.path.join(out, "samples.png"),
            f"{title}: energy distance {figures_now['energy_distance']:.4f} "
            f"(data vs data {figures_now['data_energy_distance']:.4f})",
        ),
        "score_field": figures.score_field(
            outputs["grid"],
            outputs["fields"],
            sigma_labels,
            data,
            os.path.join(out, "score_field.png"),
            f"{title}: the learned score",
        ),
    }
