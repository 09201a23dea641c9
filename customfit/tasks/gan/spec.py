"""gan: a generative adversarial network on the 8x8 digits (the lecture's exercise 7).

A generator G (dense, transposed convolutions, batch norm; latents z ~ N(0, I)) and a
discriminator D giving a logit, trained with the softplus (non-saturating) losses

    discriminator: mean softplus(-D(x)) + mean softplus(D(G(z)))
    generator:     mean softplus(-D(G(z)))

with --critic-steps discriminator updates per generator update. One training step consumes one
batch of real digits: critic_steps discriminator updates on that same batch, each with fresh
latents, then one generator update with fresh latents; each update moves its own network only
(the other one runs in training mode but frozen: no gradient, batch-norm statistics unchanged).
The same on every engine; see customfit/tasks/gan/layout.py.

Models:
  default  DCGAN-like (generator dense -> 4x4x64, 4x4 stride-2 transposed convolution to
           8x8x32, 3x3 transposed convolution to 8x8x1; discriminator 3x3 conv 32, 4x4 stride-2
           conv 64 + batch norm, dense logit), 10 epochs of batch 64, Adam 1e-3 with beta_1 0.5,
           batch-norm momentum 0.9.
  lecture  the lecture's networks (generator dense 256 -> 4x4x16, transposed convolutions
           2x2/2x2/3x3 with batch norm; discriminator 3x3 convs 4-8-16, dense logit) and its
           settings: 20 epochs of batch 16, Adam 1e-3 (Keras's defaults), latent 10, 5 critic
           steps. Differences from its code: it trains on all 1797 digits (here the 1437 of the
           training split), and its dis_loss runs the generator in inference mode (moving
           statistics); here the frozen generator runs in training mode (batch statistics), as
           in its generator step.

The judge: digit_judge (an independent scikit-learn classifier) on 1000 samples from the trained
generator in inference mode, latents drawn by the trainer's framework from the run's seed: fd
(Frechet distance of its features to the held-out digits), confidence, coverage; plus
nearest_train_l2, the mean distance of a sample to its nearest training digit (held-out digits
give held_out_nearest_train_l2: a GAN far below that copies its training set).
"""

import io
import os

import numpy as np

from customfit.data import unlabelled_digits_split
from customfit.tasks import digit_judge
from customfit.options import Option
from customfit.tasks.gan import layout

NAME = "gan"
FAMILY = "gan"
SUMMARY = (
    "generative adversarial network on the 8x8 digits: generator (dense, transposed "
    "convolutions, batch norm), discriminator logit, softplus losses, k discriminator "
    "updates per generator update (exercise 7)"
)
JUDGE = (
    "1000 generated digits by the digit judge: Frechet distance to held-out digits (fd), "
    "confidence, coverage of the ten classes"
)
HEADLINE = "fd"
MODELS = dict(layout.MODELS)
DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "seed": 0, "model": "default"}
MODEL_DEFAULTS = {"lecture": {"epochs": 20, "batch_size": 16, "lr": 1e-3}}
OPTIONS = {
    "critic_steps": Option(
        "critic_steps",
        "int",
        "discriminator updates per generator update (each on the same batch, with fresh latents)",
        default=5,
        low=1,
        high=100,
    ),
    "latent": Option("latent", "int", "the latent size", default=10, low=1, high=1024),
}

# The lecture's own GAN on the same judge: `customfit run gan --engine keras-torch --model
# lecture` (the lecture ran it on Keras + PyTorch), seed 0, its settings.
LECTURE_FD = 21.4021
LECTURE_FD_MEASURED = (
    "2026-11-29, keras-torch, seed 0: fd 21.4021, confidence 0.8514, "
    "coverage 0.9125, 415 s of training"
)
LECTURE_FIGURES = {"fd": LECTURE_FD, "confidence": 0.8514, "coverage": 0.9125}
BAR_FACTOR = 0.7
BARS = {"coverage": 0.9}
SAMPLES = 1000


load = unlabelled_digits_split


def references(settings):
    return digit_judge.beside("the lecture's GAN (keras-torch, seed 0)", LECTURE_FIGURES)


def bars(settings):
    """fd at most 0.7 x the lecture's GAN's, coverage at least 0.9."""
    return {"fd": ("<=", round(BAR_FACTOR * LECTURE_FD, 4)), **BARS}


def build_trainer(trainer_class, split, settings):
    names = ("model", "latent", "critic_steps", "lr", "seed")
    return trainer_class(*(settings[name] for name in names), devices=settings.get("devices", 1))


def parity_inputs(split, settings):
    """The batch and latents the report's parity probe gives every engine."""
    rng = np.random.default_rng(0)
    noise = {
        name: rng.standard_normal((16, settings["latent"])).astype(np.float32)
        for name in ("dis", "gen")
    }
    return (split.x_train[:16],), noise


def after_epoch(trainer, settings, epoch, out):
    """The fixed latent batch's digits after this epoch: out/epochs/epoch_0003.npy (the GIF's
    frames; a resumed run keeps the earlier epochs' files)."""
    from customfit import checkpoint

    images = np.asarray(trainer.generate(layout.fixed_latents(settings["latent"])), np.float32)
    folder = os.path.join(out, "epochs")
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    checkpoint.atomic_write(epoch_path(out, epoch), buffer.getvalue())


def epoch_path(out, epoch):
    return os.path.join(out, "epochs", f"epoch_{epoch:04d}.npy")


def produce(trainer, split, settings, verbose=False):
    return {"samples": np.asarray(trainer.sample(SAMPLES, settings["seed"]), np.float32)}


def nearest_l2(a, b):
    """For each row of a, the Euclidean distance to its nearest row of b (float64)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    squares = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squares.min(axis=1), 0.0))


def judge(outputs, split, settings):

    samples = outputs["samples"]
    digit_judge.check_samples(samples, SAMPLES)
    metrics = digit_judge.judge(samples)
    metrics["nearest_train_l2"] = float(nearest_l2(samples, split.x_train).mean())
    metrics["held_out_nearest_train_l2"] = float(nearest_l2(split.x_test, split.x_train).mean())
    metrics["lecture_fd"] = LECTURE_FD
    return metrics


def write(outputs, trainer, split, history, out, title):
    from customfit import checkpoint
    from customfit.tasks.gan import figures

    path = checkpoint.atomic_save_npy(
        os.path.join(out, "samples.npy"), np.asarray(outputs["samples"], np.float32)
    )
    paths = {
        "samples": path,
        "samples_grid": figures.grid(outputs["samples"], os.path.join(out, "samples.png"), title),
    }
    frames = [
        (row["epoch"], np.load(epoch_path(out, row["epoch"]), allow_pickle=False))
        for row in history
        if os.path.exists(epoch_path(out, row["epoch"]))
    ]
    if frames:
        paths["training_animation"] = figures.animation(frames, os.path.join(out, "training.gif"))
    return paths
