"""What the four VAE engine files must agree on, in one place. NumPy only, no framework.

Two networks (an encoder giving the posterior's mean and log-variance, a decoder giving the
pixels' means), two objectives, and the canonical layout their weights cross engines in.

Networks (`network`):
  "mlp"   encoder  flatten 64 -> dense 256 relu -> dense 128 relu -> dense latent (mu)
                                                                  -> dense latent (log-variance)
          decoder  dense 128 relu -> dense 256 relu -> dense 64 sigmoid -> reshape (8, 8, 1)
  "conv"  the lecture's (exercise 5):
          encoder  conv 4, 8, 16 (3x3, valid, relu): 8x8 -> 2x2x16 -> flatten 64 -> dense mu,
                   dense log-variance
          decoder  dense 256 relu -> reshape (4, 4, 16) -> conv-transpose 8 (2x2) leaky_relu
                   -> conv-transpose 4 (2x2) leaky_relu -> conv-transpose 1 (3x3) sigmoid: 8x8x1
          (stride 1, valid; leaky_relu's slope is Keras's 0.2, set explicitly everywhere)

Objectives (`objective`), for a batch of B images x, the encoder's (mu, l) and the decoder's
x_hat = f(mu + eps * exp(l / 2)), eps ~ N(0, I) (one draw per image), temperature T:
  "elbo"     KL + reconstruction, each summed over its dimensions and averaged over the batch:
             mean_b [ 1/2 sum_j (mu^2 + e^l - 1 - l) ] + mean_b [ sum_pixels (x - x_hat)^2 ] / (2T)
             = the negative ELBO of the Gaussian decoder N(x_hat, T) less its constant
             (64 / 2) log(2 pi T) per image.
  "lecture"  the lecture's means: reduce_mean over the batch *and* the dimensions,
             mean_{b,j} [ 1/2 (mu^2 + e^l - 1 - l) ] + mean_{b,pixels} [ (x - x_hat)^2 ] / (2T)
             = (1 / latent) * "elbo" at the temperature T * 64 / latent (see the spec's notes).

Canonical weights: a dict {"encoder": [...], "decoder": [...]}, each list in Keras's layout and
layer order, every kernel followed by its bias:
    dense            (in, out)                 torch nn.Linear            (out, in)
    conv             (kh, kw, in, out)         torch nn.Conv2d            (out, in, kh, kw)
    conv-transpose   (kh, kw, out, in)         torch nn.ConvTranspose2d   (in, out, kh, kw)
The encoder's last two layers are the mu head, then the log-variance head. TensorFlow (tf.keras),
the Keras engines and Flax NNX (nnx.Linear, nnx.Conv, nnx.ConvTranspose with
transpose_kernel=True, which stores (kh, kw, out, in) and computes the gradient of a convolution,
as Keras and torch do) hold their weights this way already; only torch differs, and for both
conv kinds its layout is the same permutation of Keras's (axes 3, 2, 0, 1).
"""

import math

import numpy as np

from customfit.trainers import canonical

NETWORKS = ("mlp", "conv")
OBJECTIVES = ("elbo", "lecture")
IMAGE = (8, 8, 1)
PIXELS = 64
LEAKY_SLOPE = 0.2  # Keras's leaky_relu; torch's and Flax's default is 0.01
ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
MLP_HIDDEN = (256, 128)
CONV_FILTERS = (4, 8, 16)
CONV_DECODER = {"dense": 256, "reshape": (4, 4, 16), "filters": (8, 4, 1), "kernels": (2, 2, 3)}
NETS = ("encoder", "decoder")
STATE_FORMAT = "customfit.vae.adam/1"


def check(network, objective):
    if network not in NETWORKS:
        raise ValueError(f"network: expected one of {NETWORKS}; given {network!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}; given {objective!r}")


def canonical_shapes(network, latent):
    """{"encoder": [shape, ...], "decoder": [...]} in the canonical layout (module docstring)."""
    if network == "mlp":
        h1, h2 = MLP_HIDDEN
        encoder = [
            (PIXELS, h1),
            (h1,),
            (h1, h2),
            (h2,),
            (h2, latent),
            (latent,),
            (h2, latent),
            (latent,),
        ]
        decoder = [(latent, h2), (h2,), (h2, h1), (h1,), (h1, PIXELS), (PIXELS,)]
    elif network == "conv":
        encoder, channels = [], 1
        for filters in CONV_FILTERS:
            encoder += [(3, 3, channels, filters), (filters,)]
            channels = filters
        flat = 2 * 2 * CONV_FILTERS[-1]
        encoder += [(flat, latent), (latent,), (flat, latent), (latent,)]
        decoder = [(latent, CONV_DECODER["dense"]), (CONV_DECODER["dense"],)]
        channels = CONV_DECODER["reshape"][-1]
        for filters, k in zip(CONV_DECODER["filters"], CONV_DECODER["kernels"]):
            decoder += [(k, k, filters, channels), (filters,)]  # (kh, kw, out, in)
            channels = filters
    else:
        raise ValueError(f"network: expected one of {NETWORKS}; given {network!r}")
    return {"encoder": encoder, "decoder": decoder}


def check_weights(shapes, weights, what="weights"):
    """Raise ValueError naming the first array whose shape is not the expected one."""
    if not isinstance(weights, dict) or sorted(weights) != sorted(NETS):
        given = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise ValueError(f"{what}: expected a dict with keys {list(NETS)}, given {given}")
    for net in NETS:
        canonical.check_shapes(shapes[net], weights[net], what=f"{what}[{net}]")


def copied(weights):
    """{"encoder": [...], "decoder": [...]} as new float32 arrays (no views of live memory)."""
    return {
        net: [np.array(a, dtype=np.float32, order="C", copy=True) for a in weights[net]]
        for net in NETS
    }


# ----------------------------------------------------------------------------- state


def pack_state(weights, first, second, step):
    """A flat dict: weights/<net>/<i>, adam/m/<net>/<i>, adam/v/<net>/<i> (canonical) and
    adam/step, whichever engine wrote it."""
    arrays = {}
    for prefix, group in (("weights", weights), ("adam/m", first), ("adam/v", second)):
        for net in NETS:
            for i, array in enumerate(group[net]):
                arrays[f"{prefix}/{net}/{i}"] = np.array(array, dtype=np.float32, copy=True)
    arrays["adam/step"] = np.asarray(int(step), dtype=np.int64)
    return arrays


def state_meta(engine, network, objective, latent):
    return {
        "format": STATE_FORMAT,
        "engine": engine,
        "network": network,
        "objective": objective,
        "latent": int(latent),
    }


def unpack_state(arrays, meta, shapes):
    """(weights, first moments, second moments, step) from pack_state's dict, checked."""
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        given = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"state: expected format {STATE_FORMAT!r}, given {given!r}")
    groups = []
    for prefix in ("weights", "adam/m", "adam/v"):
        group = {}
        for net in NETS:
            names = [f"{prefix}/{net}/{i}" for i in range(len(shapes[net]))]
            missing = [name for name in names if name not in arrays]
            if missing:
                raise ValueError(f"state: expected arrays {names}, missing {missing}")
            group[net] = [np.asarray(arrays[name], dtype=np.float32) for name in names]
        check_weights(shapes, group, what=f"state {prefix}")
        groups.append(group)
    if "adam/step" not in arrays:
        raise ValueError("state: expected an array 'adam/step', none given")
    return groups[0], groups[1], groups[2], int(np.asarray(arrays["adam/step"]))


# ----------------------------------------------------------------------------- running means

FIGURES = ("loss", "kl", "reconstruction", "neg_elbo")


def gaussian_constant(temperature):
    """-log N(x; x_hat, T) summed over 64 pixels, less sum (x - x_hat)^2 / (2T): (64/2) log(2 pi T)."""
    return 0.5 * PIXELS * math.log(2.0 * math.pi * temperature)


class RunningMeans:
    """Running means of the figures over the images seen so far, weighted by batch size (a
    short last batch counts for what it holds, as in Keras's metrics)."""

    def __init__(self):
        self.sums = dict.fromkeys(FIGURES, 0.0)
        self.seen = 0

    def add(self, figures, n):
        for key in FIGURES:
            self.sums[key] += float(figures[key]) * n
        self.seen += int(n)

    def means(self):
        return {key: value / self.seen for key, value in self.sums.items()}


# ----------------------------------------------------------------------------- for one engine


def state_codec(network, objective, latent, engine):
    """The checkpoint in one uniform shape: check(weights); pack(weights, first, second, step),
    Adam's moments shaped as the weights; unpack(arrays, meta) -> (weights, first, second, step);
    meta."""
    shapes = canonical_shapes(network, latent)
    return {
        "check": lambda weights: check_weights(shapes, weights),
        "pack": pack_state,
        "unpack": lambda arrays, meta: unpack_state(arrays, meta, shapes),
        "meta": state_meta(engine, network, objective, latent),
    }
