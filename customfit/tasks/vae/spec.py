"""vae: a variational auto-encoder of the 8x8 digits (the lecture's exercise 5).

An encoder gives the posterior's mean and log-variance, z = mu + eps * exp(l / 2) with eps from
each framework's own seeded generator, a decoder gives the pixels' means; one encoder pass per
step (the lecture's code ran it twice). The loss is KL + reconstruction / (2T), T the temperature
(the decoder's variance, --temperature); see customfit/tasks/vae/layout.py for both objectives.

Models:
  default  an MLP VAE (64-256-128 encoder, mirrored decoder) trained on the proper negative ELBO:
           KL summed over the latent dimensions, squared error summed over the 64 pixels, both
           averaged over the batch. T = 0.1, latent 8, 300 epochs of batch 64, Adam 1e-3.
  lecture  the lecture's conv encoder (4-8-16) and conv-transpose decoder, its T = 0.01, latent
           10, 20 epochs of batch 16, Adam's defaults, and its means (reduce_mean over the batch
           *and* the dimensions). Those means make its loss (1 / latent) times the proper
           negative ELBO at the temperature T * 64 / latent (0.064 for its T = 0.01, latent 10):
               mean_{b,j} kl_bj + mean_{b,p} (x - x_hat)_bp^2 / (2T)
             = (1/latent) E_b[KL_b] + (1/64) E_b[SSE_b] / (2T)
             = (1/latent) ( E_b[KL_b] + E_b[SSE_b] / (2 T 64 / latent) ).
           The factor 1 / latent only rescales the gradient (Adam nearly ignores it); the
           temperature is what changes: 6.4 times the stated one, so the KL weighs 6.4 times more
           against the reconstruction than the stated ELBO would have it.

Measured (torch engine, 2 CPU cores, the judge below):
- default: T = 0.05 or 100-150 epochs left fd at 4.3-5.7; T = 0.1 with 300 epochs of batch 64
  gave fd 3.1-4.1 and confidence 0.93-0.94 over seeds 0-5 (T = 0.15 and wider layers: no better).
- the lecture's network, 20 epochs of batch 16, seeds 0 and 1: its means at T = 0.01 gave fd 22.1
  and 37.2, KL 6.6 nats, pixel MSE 0.038-0.042; the proper ELBO at T = 0.064 gave the same
  (fd 22.3 and 36.6, KL 6.6, MSE 0.039-0.041); the proper ELBO at the stated T = 0.01 gave
  sharper reconstructions (MSE 0.023-0.028) but worse samples (fd 52 and 77, KL 19 nats, coverage
  0.81-0.85): a posterior further from the prior leaves more of the prior's mass where the decoder
  was never trained. The lecture's means thus smooth its samples at the cost of its
  reconstructions; neither reaches the bars in 20 epochs.

The judge: digit_judge's Frechet distance, confidence and coverage of 1000 samples (decoder means
of z ~ N(0, I), z drawn by the trainer's framework from the run's seed), and the held-out negative
ELBO per image in nats, constants included: KL + sum (x - x_hat)^2 / (2T) + (64/2) log(2 pi T),
the Gaussian decoder of variance T. It is computed here with NumPy from the trainer's dedicated
encode() and decode() methods, with ELBO_DRAWS reparameterised draws per held-out image from
NumPy's generator seeded by the run's seed (the history's val_neg_elbo is the trainer's own
evaluate(): one draw per image from its framework's generator).
"""

import math
import os

import numpy as np

from customfit.data import unlabelled_digits_split
from customfit.tasks import digit_judge
from customfit.options import Option

NAME = "vae"
FAMILY = "vae"
SUMMARY = (
    "variational auto-encoder of the 8x8 digits: encoder (mean, log-variance), "
    "reparameterised sample, decoder; loss KL + reconstruction / (2T) (exercise 5)"
)
JUDGE = (
    "1000 generated digits (decoder means of z ~ N(0, I)) by the digit judge: Frechet "
    "distance to held-out digits, confidence, coverage; plus the held-out negative ELBO"
)
HEADLINE = "fd"
# model -> (network, objective); see layout.py.
MODELS = {"default": ("mlp", "elbo"), "lecture": ("conv", "lecture")}
DEFAULTS = {"epochs": 300, "batch_size": 64, "lr": 1e-3, "seed": 0, "model": "default"}
MODEL_DEFAULTS = {"lecture": {"epochs": 20, "batch_size": 16, "lr": 1e-3}}
# The options' defaults differ by model; build_trainer writes them into the run's settings.
MODEL_OPTIONS = {
    "default": {"temperature": 0.1, "latent": 8},
    "lecture": {"temperature": 0.01, "latent": 10},
}
OPTIONS = {
    "temperature": Option(
        "temperature",
        "float",
        "the decoder's variance T in loss = KL + reconstruction / (2T)",
        low=0.0,
        high=10.0,
        low_open=True,
        default_text=", ".join(
            f"{v['temperature']:g} for --model {m}" for m, v in MODEL_OPTIONS.items()
        ),
    ),
    "latent": Option(
        "latent",
        "int",
        "latent dimensions",
        low=1,
        high=64,
        default_text=", ".join(f"{v['latent']} for --model {m}" for m, v in MODEL_OPTIONS.items()),
    ),
}

# The bar: below the judge's pixel-Gaussian reference (digit_judge.references(), fd 7.3257,
# rounded down; a test holds the two together), and confident samples.
PIXEL_GAUSSIAN_FD = 7.32
BARS = {"fd": ("<=", PIXEL_GAUSSIAN_FD), "confidence": 0.85}
SAMPLES = 1000
# The lecture's VAE (`--model lecture`: its conv VAE, its means and T = 0.01) on keras-tensorflow,
# the lecture's own framework, seed 0, measured 2026-11-29 (README, "Generated digits").
LECTURE_FIGURES = {"fd": 24.11, "confidence": 0.820}
SCALES = (0.5, 0.75, 1.0, 1.25)  # the prior's standard deviation, for the temperatures figure
SCALED = 100
ELBO_DRAWS = 10


load = unlabelled_digits_split


def references(settings):
    return digit_judge.beside("the lecture's VAE (keras-tensorflow, seed 0)", LECTURE_FIGURES)


def bars(settings):
    return dict(BARS)


def filled(settings):
    """The settings with the model's temperature and latent size where none was given."""
    model = settings.get("model", DEFAULTS["model"])
    return {
        **settings,
        **{k: v for k, v in MODEL_OPTIONS[model].items() if settings.get(k) is None},
    }


def build_trainer(trainer_class, split, settings):
    # Written into the run's settings, so that its config (metrics.json, the checkpoint, and
    # so --resume) records the values the run used.
    settings.update(filled(settings))
    network, objective = MODELS[settings["model"]]
    return trainer_class(
        network,
        objective,
        settings["latent"],
        settings["temperature"],
        settings["lr"],
        settings["seed"],
        devices=settings.get("devices", 1),
    )


def parity_inputs(split, settings):
    """The batch and reparameterisation noise the report's parity probe gives every engine."""
    noise = np.random.default_rng(0).standard_normal((16, filled(settings)["latent"]))
    return (split.x_train[:16],), noise.astype(np.float32)


def effective_temperature(settings):
    """The temperature at which the model's loss is (a multiple of) the proper negative ELBO."""
    settings = filled(settings)
    if MODELS[settings["model"]][1] == "lecture":
        return settings["temperature"] * 64 / settings["latent"]
    return settings["temperature"]


# ----------------------------------------------------------------------------- what it makes


def produce(trainer, split, settings, verbose=False):
    """Samples (decoder means of z ~ N(0, I)), the same draws at several prior scales, and the
    held-out encodings and decodings the negative ELBO is computed from."""
    settings = filled(settings)
    seed = settings["seed"]
    x = split.x_test
    mu, logvar = (np.asarray(a, np.float32) for a in trainer.encode(x))
    eps = np.random.default_rng(seed).standard_normal((ELBO_DRAWS, *mu.shape)).astype(np.float32)
    z = (mu[None] + eps * np.exp(0.5 * logvar)[None]).reshape(-1, mu.shape[1])
    return {
        "samples": np.asarray(trainer.sample(SAMPLES, seed), np.float32),
        "scales": np.asarray(SCALES, np.float64),
        "scaled_samples": np.stack(
            [np.asarray(trainer.sample(SCALED, seed, scale=s), np.float32) for s in SCALES]
        ),
        "x": x[..., 0],
        "mu": mu,
        "logvar": logvar,
        "elbo_decoded": np.asarray(trainer.decode(z), np.float32).reshape(ELBO_DRAWS, *x.shape[:3]),
        "reconstructions": np.asarray(trainer.decode(mu), np.float32),
    }


# ----------------------------------------------------------------------------- the judge


def negative_elbo(x, mu, logvar, decoded, temperature):
    """Per image, in nats: KL(N(mu, e^l) || N(0, I)) + E_eps[sum (x - x_hat)^2] / (2T)
    + (64/2) log(2 pi T), the expectation over the draws in `decoded` (draws, N, 8, 8)."""
    x, mu, logvar, decoded = (np.asarray(a, np.float64) for a in (x, mu, logvar, decoded))
    kl = 0.5 * np.sum(mu**2 + np.exp(logvar) - 1.0 - logvar, axis=1)
    squares = np.sum((x[None] - decoded) ** 2, axis=(2, 3)).mean(axis=0)
    constant = 0.5 * x[0].size * math.log(2.0 * math.pi * temperature)
    return kl + squares / (2.0 * temperature) + constant, kl, squares


def judge(outputs, split, settings):

    settings = filled(settings)
    samples = outputs["samples"]
    digit_judge.check_samples(samples, SAMPLES, nan_out_of_range=True)
    metrics = digit_judge.judge(samples)
    T = settings["temperature"]
    nelbo, kl, squares = negative_elbo(
        outputs["x"], outputs["mu"], outputs["logvar"], outputs["elbo_decoded"], T
    )
    metrics.update(
        {
            "neg_elbo": float(nelbo.mean()),
            "kl": float(kl.mean()),
            "reconstruction_mse": float(squares.mean() / outputs["x"][0].size),
            "active_latents": float(
                np.sum(np.var(np.asarray(outputs["mu"], np.float64), axis=0) > 0.01)
            ),
            "latent": float(settings["latent"]),
            "temperature": float(T),
            "effective_temperature": float(effective_temperature(settings)),
        }
    )
    if metrics["effective_temperature"] != T:
        nelbo_effective, _, _ = negative_elbo(
            outputs["x"],
            outputs["mu"],
            outputs["logvar"],
            outputs["elbo_decoded"],
            metrics["effective_temperature"],
        )
        metrics["neg_elbo_at_effective_temperature"] = float(nelbo_effective.mean())
    return metrics


# ----------------------------------------------------------------------------- what it writes


def write(outputs, trainer, split, history, out, title):
    from customfit import checkpoint
    from customfit.tasks.vae import figures

    path = checkpoint.atomic_save_npy(
        os.path.join(out, "samples.npy"), np.asarray(outputs["samples"], np.float32)
    )
    return {
        "samples": path,
        "samples_grid": figures.grid(outputs["samples"], os.path.join(out, "samples.png"), title),
        "reconstructions": figures.reconstructions(
            outputs["x"],
            outputs["reconstructions"],
            os.path.join(out, "reconstructions.png"),
            title,
        ),
        "temperatures": figures.temperatures(
            outputs["scaled_samples"],
            outputs["scales"],
            os.path.join(out, "temperatures.png"),
            title,
        ),
    }
