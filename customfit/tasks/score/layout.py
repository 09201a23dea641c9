"""What the four score-model engine files must agree on, in one place. NumPy only, no framework.

Two methods, their networks, their objectives, the Langevin rules that sample from them, and the
canonical layout their weights cross engines in.

Methods (`method`):
  "lecture"  the lecture's exercise 9: plain (Hyvarinen) score matching. A network s(x) is
             trained on
                 loss = mean_b [ |s(x_b)|^2 + 2 div s(x_b) ]
             with the exact divergence (the trace of the Jacobian ds/dx), or with
             divergence="hutchinson" its sliced estimate v . (ds/dx) v from one Rademacher probe
             v per sample. Sampling: Langevin from a Gaussian start,
                 x <- x + eps s(x) + sqrt(2 eps T) xi,   xi ~ N(0, I), T = 1.
  "dsm"      denoising score matching over a ladder of noise levels sigma_1 > ... > sigma_L
             (geometric) with a noise-conditional network s(x, sigma) = net([x, log sigma]) /
             sigma. Each sample of a batch draws a level i uniformly and z ~ N(0, I):
                 loss = mean_b | sigma_i s(x_b + sigma_i z_b, sigma_i) + z_b |^2
             (the sigma^2-weighted objective of Song & Ermon 2019). Sampling: annealed Langevin
             from N(0, sigma_1^2 I), `steps` steps at each level with eps_i = step * sigma_i^2,
             then one denoising step x <- x + sigma_L^2 s(x, sigma_L) (Tweedie's formula).

Networks (`network`), multi-layer perceptrons, every hidden layer followed by the activation:
  "lecture"  2 -> 32 -> 32 -> 2, softplus (the lecture's ScoreModel)
  "toy"      [x, log sigma] 3 -> 128 -> 128 -> 128 -> 2, silu
  "digits"   [x / sqrt(sigma^2 + 0.45^2), log sigma] 65 -> 512 -> 512 -> 512 -> 64, silu (the
             8x8 digits, flattened; sigma_data 0.45 scales the input to about unit variance at
             every level, as Karras et al. 2022 precondition theirs)

Canonical weights: a list, every dense kernel (in, out) followed by its bias (out,), hidden layers
first, the output layer last: Keras's layout, which TensorFlow, the Keras engines and Flax NNX hold
already; torch's nn.Linear stores (out, in) (customfit.trainers.canonical converts).
"""

import math

import numpy as np

from customfit.trainers import canonical

METHODS = ("dsm", "lecture")
DIVERGENCES = ("exact", "hutchinson")
NETWORKS = {
    "lecture": {
        "data": 2,
        "hidden": (32, 32),
        "activation": "softplus",
        "conditional": False,
        "sigma_data": None,
    },
    "toy": {
        "data": 2,
        "hidden": (128, 128, 128),
        "activation": "silu",
        "conditional": True,
        "sigma_data": None,
    },
    "digits": {
        "data": 64,
        "hidden": (512, 512, 512),
        "activation": "silu",
        "conditional": True,
        "sigma_data": 0.45,
    },
}
TEMPERATURE = 1.0  # the lecture's T
ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
STATE_FORMAT = "customfit.score.adam/1"


def check(method, network, divergence=None, sigmas=None):
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}; given {method!r}")
    if network not in NETWORKS:
        raise ValueError(f"network: expected one of {tuple(NETWORKS)}; given {network!r}")
    conditional = NETWORKS[network]["conditional"]
    if conditional != (method == "dsm"):
        raise ValueError(
            f"network: method {method} needs a{'' if method == 'dsm' else 'n un'}"
            f"conditional network; given {network!r}"
        )
    if method == "lecture" and divergence not in DIVERGENCES:
        raise ValueError(f"divergence: expected one of {DIVERGENCES}; given {divergence!r}")
    if method == "dsm":
        sigmas = np.asarray(sigmas if sigmas is not None else [], np.float64)
        if (
            sigmas.ndim != 1
            or len(sigmas) < 1
            or not np.all(sigmas > 0)
            or not np.all(np.diff(sigmas) < 0)
        ):
            raise ValueError(f"sigmas: expected decreasing positive noise levels; given {sigmas}")


def settings(method, network, divergence=None, sigmas=None):
    """A Trainer's settings, checked: (method, network, divergence, sigmas), the divergence the
    lecture method's alone (None for dsm), the noise levels float32 (None for the lecture's)."""
    check(method, network, divergence, sigmas)
    return (
        method,
        network,
        divergence if method == "lecture" else None,
        None if sigmas is None else np.asarray(sigmas, np.float32),
    )


def parity_draws(noise):
    """The parity hook's draws (None, {"probe"} or {"levels", "z"}) as NumPy arrays: the noise
    levels' indices int64, the rest float32."""
    return {
        k: np.asarray(v, np.int64 if k == "levels" else np.float32)
        for k, v in (noise or {}).items()
    }


def dims(network):
    """(input width, hidden widths, output width) of a network."""
    spec = NETWORKS[network]
    return spec["data"] + int(spec["conditional"]), spec["hidden"], spec["data"]


def canonical_shapes(network):
    width, hidden, out = dims(network)
    shapes = []
    for units in (*hidden, out):
        shapes += [(width, units), (units,)]
        width = units
    return shapes


def check_weights(network, weights, what="weights"):
    canonical.check_shapes(canonical_shapes(network), weights, what)


def copied(arrays):
    return [np.array(a, dtype=np.float32, order="C", copy=True) for a in arrays]


# ----------------------------------------------------------------------------- noise and sampling


def noise_levels(sigma_max, sigma_min, levels):
    """The ladder sigma_1 > ... > sigma_L, geometric, float32 (what every engine computes with)."""
    if levels == 1:
        return np.asarray([sigma_min], np.float32)
    return np.geomspace(sigma_max, sigma_min, int(levels)).astype(np.float32)


def langevin_plan(method, steps, step_size, sigmas=None):
    """[(level, eps, count)]: `count` Langevin steps of size eps at noise level `level` (an index
    into sigmas; None for the lecture's unconditional model), in order."""
    if method == "lecture":
        return [(None, float(step_size), int(steps))]
    return [(i, float(step_size) * float(s) ** 2, int(steps)) for i, s in enumerate(sigmas)]


def segments(plan, record):
    """The plan cut where a frame is recorded: [(level, eps, count, keep)], keep meaning "keep
    the state after these steps as a frame". `record`: the global step numbers (1 = after the
    first step) whose states the animation shows."""
    record = sorted(set(int(r) for r in record))
    out, done = [], 0
    for level, eps, count in plan:
        end = done + count
        cuts = [r for r in record if done < r <= end]
        start = done
        for r in cuts:
            out.append((level, eps, r - start, True))
            start = r
        if start < end:
            out.append((level, eps, end - start, False))
        done = end
    return out


def cosine_decay(step, decay_steps):
    """The learning rate's factor at optimizer step `step` (0 for the first update): cosine from
    1 to 0 over decay_steps updates, then 0 (Keras's CosineDecay, optax's cosine_decay_schedule)."""
    if not decay_steps:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))


# ----------------------------------------------------------------------------- state


def pack_state(weights, first, second, step):
    """weights/<i>, adam/m/<i>, adam/v/<i> (canonical) and adam/step, whichever engine wrote it."""
    return canonical.pack_adam_state(copied(weights), copied(first), copied(second), step)


def state_meta(engine, method, network, divergence, sigmas):
    return {
        "format": STATE_FORMAT,
        "engine": engine,
        "method": method,
        "network": network,
        "divergence": divergence,
        "sigmas": None if sigmas is None else [float(s) for s in sigmas],
    }


def unpack_state(arrays, meta, network):
    """(weights, first moments, second moments, step) from pack_state's dict, checked."""
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        given = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"state: expected format {STATE_FORMAT!r}, given {given!r}")
    if meta.get("network") != network:
        raise ValueError(f"state: expected network {network!r}, given {meta.get('network')!r}")
    return canonical.unpack_adam_state(arrays, canonical_shapes(network))


# ----------------------------------------------------------------------------- running means

FIGURES = {"lecture": ("loss", "squared_norm", "divergence"), "dsm": ("loss",)}


class RunningMeans:
    """Running means of the figures over the samples seen so far, weighted by batch size."""

    def __init__(self, method):
        self.names = FIGURES[method]
        self.sums = dict.fromkeys(self.names, 0.0)
        self.seen = 0

    def add(self, figures, n):
        for key in self.names:
            self.sums[key] += float(figures[key]) * n
        self.seen += int(n)

    def means(self):
        return {key: value / self.seen for key, value in self.sums.items()}


# ----------------------------------------------------------------------------- for one engine


def state_codec(engine, method, network, divergence, sigmas):
    """The checkpoint in one uniform shape: check(weights); pack(weights, first, second, step),
    Adam's moments shaped as the weights; unpack(arrays, meta) -> (weights, first, second, step);
    meta."""
    return {
        "check": lambda weights: check_weights(network, weights),
        "pack": pack_state,
        "unpack": lambda arrays, meta: unpack_state(arrays, meta, network),
        "meta": state_meta(engine, method, network, divergence, sigmas),
    }
