"""What the GAN family's six engines must agree on, in one place. NumPy only.

The networks themselves are written out in each engine file, in that framework's own idiom
(with_tensorflow.py, with_torch.py, with_flax.py, with_keras.py). This module holds what must be
the same everywhere:

- the sizes of the two models (`lecture`, `default`) and their batch-norm settings;
- every array of each network, in one canonical order and layout (Keras's): `entries()`;
- each framework's name for each array (PyTorch's layout: customfit/trainers/canonical.py converts);
- the checkpoint's array names (`pack_state`/`unpack_state`);
- the parity hook's noise and answer (below);
- how noise is seeded (`noise_seed`, EVAL_SEED, FIXED_SEED).

Canonical layout (Keras's; TensorFlow, the Keras engines and Flax store their arrays this way,
PyTorch differs):

    dense kernel           (in, out)            torch nn.Linear weight            (out, in)
    conv kernel            (kh, kw, in, out)    torch nn.Conv2d weight            (out, in, kh, kw)
    conv-transpose kernel  (kh, kw, out, in)    torch nn.ConvTranspose2d weight   (in, out, kh, kw)
    bias, batch-norm gamma, beta, moving mean, moving variance: (channels,) everywhere

Both kernels go to PyTorch by the same permutation (3, 2, 0, 1). Flax's nnx.ConvTranspose is
built with transpose_kernel=True: its kernel is then (kh, kw, out, in) and it computes what Keras's
and PyTorch's layers compute (the gradient of a convolution); with the default
transpose_kernel=False it would hold (kh, kw, in, out) and correlate with the kernel unflipped.

Canonical weights: {"gen": [arrays], "dis": [arrays]}, each list in entries() order, batch-norm
moving statistics included (as Keras's get_weights() gives them). Gradients: {"gen": [...]} or
{"dis": [...]} over the trainable entries only (kernels, biases, gamma, beta), same order.

Batch norm: Keras's momentum (0.99 means moving = 0.99 moving + 0.01 batch) and epsilon, set
explicitly on every engine (PyTorch's momentum is 1 - this). One difference stays: PyTorch
updates its running variance with the unbiased batch variance (times n / (n - 1), n = batch x
height x width), Keras and Flax with the biased one; normalisation uses the biased one everywhere.

What one training step consumes (every engine): one batch of B real digits; `critic_steps`
discriminator updates, each on that same batch with B fresh latents, then one generator update
with B fresh latents. Each update moves its own network only: the other network runs in training
mode (batch statistics) but frozen: no gradient to its weights, no change to its moving
statistics (cf.frozen in the Keras engines; saved and put back in the native ones). The history's
dis_loss is the mean over every discriminator update of the epoch, gen_loss over every generator
update, each weighted by batch size; val_dis_loss and val_gen_loss are the same objectives on the
held-out digits in inference mode, with latents drawn from EVAL_SEED.

The parity hook, Trainer.objective_and_grads(batch, noise):
    batch = (x,), x of shape (B, 8, 8, 1) in [0, 1];
    noise = {"dis": z_d, "gen": z_g}, either key or both, latents of shape (n, latent);
    returns {"dis": (value, grads), "gen": (value, grads)} for the keys given:
        "dis": mean softplus(-D(x)) + mean softplus(D(G(z_d))), gradients over D's trainable
               entries; "gen": mean softplus(-D(G(z_g))), gradients over G's trainable entries;
    both in training mode (batch statistics), as an update computes them, from the current
    weights; nothing is updated (weights, moving statistics, optimizer slots stay).
"""

from dataclasses import dataclass

import numpy as np

NETWORKS = ("gen", "dis")
OBJECTIVES = ("dis", "gen")  # the order of a step's updates
IMAGE_SHAPE = (8, 8, 1)

# The lecture's GAN (exercise 7): its sizes, and Keras's batch-norm and Adam defaults, which it
# ran with.
LECTURE = {"name": "lecture", "bn_momentum": 0.99, "bn_epsilon": 1e-3, "beta_1": 0.9}
# Ours, DCGAN-like: dense -> 4x4xW, conv-transpose to 8x8xW/2, conv-transpose to 8x8x1; a
# discriminator of two convolutions (the second with batch norm) and a dense logit. As in DCGAN,
# a convolution followed by batch norm has no bias (batch norm's beta is its bias). Adam's
# beta_1 = 0.5 as DCGAN has it (with 0.9 and 5 critic steps the discriminator wins, measured).
# Batch-norm momentum 0.9 (PyTorch's default, which examples/dcgan runs with): with Keras's 0.99
# the moving statistics that inference mode samples with trail the generator by ~100 updates
# (4 epochs); measured on torch, seed 0, after 12 epochs: fd 37 in inference mode, 3 in training
# mode; with 0.9, 2.7 and 3.
DEFAULT = {
    "name": "default",
    "width": 64,
    "bn_momentum": 0.9,
    "bn_epsilon": 1e-3,
    "leaky_slope": 0.2,
    "beta_1": 0.5,
}
# Adam everywhere: beta_1 as the model says, then these (Keras's epsilon on every engine).
BETA_2, ADAM_EPSILON = 0.999, 1e-7
MODELS = {"lecture": LECTURE, "default": DEFAULT}

# Where an epoch's latents come from: a seed of its own, derived from the epoch's shuffle seed.
EVAL_SEED = 2024  # evaluate(): the same latents after every epoch
FIXED_SEED = 7  # the per-epoch grid's fixed latent batch (NumPy, the same on every engine)
GRID = 10  # the sample grids are GRID x GRID


def adam_settings(model):
    """Keras's Adam's settings for `model`: its beta_1, then BETA_2 and ADAM_EPSILON."""
    return {"beta_1": MODELS[model]["beta_1"], "beta_2": BETA_2, "epsilon": ADAM_EPSILON}


def noise_seed(shuffle_seed):
    """The seed of an epoch's latents, from the seed that shuffles it (customfit.data.epoch_seed):
    both are functions of (run seed, epoch), so a resumed epoch draws what it drew before."""
    return int(np.random.default_rng([int(shuffle_seed), 1]).integers(2**31 - 1))


def fixed_latents(latent, n=GRID * GRID, seed=FIXED_SEED):
    """The per-epoch grid's latent batch: N(0, I), float32, the same for every engine and epoch."""
    return np.random.default_rng(seed).standard_normal((n, latent)).astype(np.float32)


# ----------------------------------------------------------------------------- the entries


@dataclass(frozen=True)
class Entry:
    """One array of a network. layer: the attribute naming the layer in every engine file;
    role: kernel, bias, gamma, beta, mean, variance; kind: dense, conv, conv_transpose, vector."""

    layer: str
    role: str
    kind: str
    shape: tuple

    @property
    def name(self):
        return f"{self.layer}/{self.role}"

    @property
    def trainable(self):
        return self.role not in ("mean", "variance")


def _dense(layer, n_in, n_out):
    return [
        Entry(layer, "kernel", "dense", (n_in, n_out)),
        Entry(layer, "bias", "vector", (n_out,)),
    ]


def _conv(layer, k, n_in, n_out, bias=True):
    return [Entry(layer, "kernel", "conv", (k, k, n_in, n_out))] + (
        [Entry(layer, "bias", "vector", (n_out,))] if bias else []
    )


def _conv_transpose(layer, k, n_in, n_out, bias=True):
    return [Entry(layer, "kernel", "conv_transpose", (k, k, n_out, n_in))] + (
        [Entry(layer, "bias", "vector", (n_out,))] if bias else []
    )


def _norm(layer, channels):
    return [
        Entry(layer, role, "vector", (channels,)) for role in ("gamma", "beta", "mean", "variance")
    ]


def entries(model, latent):
    """{"gen": [Entry], "dis": [Entry]}: every array of each network, in canonical order."""
    if model == "lecture":
        gen = (
            _dense("dense", latent, 4 * 4 * 16)
            + _norm("norm0", 16)
            + _conv_transpose("up1", 2, 16, 8)
            + _norm("norm1", 8)
            + _conv_transpose("up2", 2, 8, 4)
            + _norm("norm2", 4)
            + _conv_transpose("out", 3, 4, 1)
        )
        dis = (
            _conv("conv1", 3, 1, 4)
            + _conv("conv2", 3, 4, 8)
            + _conv("conv3", 3, 8, 16)
            + _dense("logit", 2 * 2 * 16, 1)
        )
    elif model == "default":
        w = DEFAULT["width"]
        gen = (
            _dense("dense", latent, 4 * 4 * w)
            + _norm("norm0", w)
            + _conv_transpose("up", 4, w, w // 2, bias=False)
            + _norm("norm1", w // 2)
            + _conv_transpose("out", 3, w // 2, 1)
        )
        dis = (
            _conv("conv1", 3, 1, w // 2)
            + _conv("conv2", 4, w // 2, w, bias=False)
            + _norm("norm", w)
            + _dense("logit", 4 * 4 * w, 1)
        )
    else:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}; given {model!r}")
    return {"gen": gen, "dis": dis}


def trainable(entry_list):
    return [e for e in entry_list if e.trainable]


# Each framework's attribute for each role (the layer is the same attribute name everywhere).
ROLES = {
    "keras": {
        "kernel": "kernel",
        "bias": "bias",
        "gamma": "gamma",
        "beta": "beta",
        "mean": "moving_mean",
        "variance": "moving_variance",
    },
    "torch": {
        "kernel": "weight",
        "bias": "bias",
        "gamma": "weight",
        "beta": "bias",
        "mean": "running_mean",
        "variance": "running_var",
    },
    "flax": {
        "kernel": "kernel",
        "bias": "bias",
        "gamma": "scale",
        "beta": "bias",
        "mean": "mean",
        "variance": "var",
    },
}


def find(network, entry, framework):
    """The framework's variable (parameter, buffer) holding `entry` in `network`."""
    return getattr(getattr(network, entry.layer), ROLES[framework][entry.role])


def check_weights(model, latent, weights, what="weights"):
    """Raise ValueError naming the first array that is missing or of the wrong shape."""
    expected = entries(model, latent)
    if not isinstance(weights, dict) or sorted(weights) != sorted(NETWORKS):
        given = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise ValueError(f"{what}: expected a dict with keys {list(NETWORKS)}, given {given}")
    for net in NETWORKS:
        arrays = list(weights[net])
        if len(arrays) != len(expected[net]):
            raise ValueError(
                f"{what}[{net!r}]: expected {len(expected[net])} arrays, given {len(arrays)}"
            )
        for entry, array in zip(expected[net], arrays):
            if tuple(np.shape(array)) != entry.shape:
                raise ValueError(
                    f"{what}[{net!r}] {entry.name}: expected shape {entry.shape}, "
                    f"given {tuple(np.shape(array))}"
                )


# ----------------------------------------------------------------------------- state

STATE_FORMAT = "customfit.gan.adam/1"


def keras_variables(network, net_entries, only_trainable=False):
    """A Keras network's variables (tf.keras's or Keras 3's) in the canonical order: those of
    every entry, or of the trainable ones."""
    chosen = trainable(net_entries) if only_trainable else net_entries
    return [find(network, e, "keras") for e in chosen]


def assign_weights(model, latent, variables_of, weights):
    """Check canonical `weights`, then assign each network's to variables_of(net), in order."""
    check_weights(model, latent, weights)
    for net in NETWORKS:
        for variable, value in zip(variables_of(net), weights[net]):
            variable.assign(np.asarray(value, np.float32))


def pack_state(model, latent, weights, moments, steps):
    """A flat dict name -> array for a checkpoint, every array canonical:
        gen/<entry>, dis/<entry>                 every weight and moving statistic
        gen/adam/m/<entry>, gen/adam/v/<entry>   each optimizer's moments (trainable entries)
        gen/adam/step, dis/adam/step             each optimizer's update count
    weights: canonical weights; moments: {net: (first moments, second moments)}, canonical lists
    over the trainable entries; steps: {net: int}."""
    check_weights(model, latent, weights)
    arrays = {}
    for net, entry_list in entries(model, latent).items():
        for e, a in zip(entry_list, weights[net]):
            arrays[f"{net}/{e.name}"] = np.array(a, dtype=np.float32)
        first, second = moments[net]
        for e, m, v in zip(trainable(entry_list), first, second, strict=True):
            arrays[f"{net}/adam/m/{e.name}"] = np.array(m, dtype=np.float32)
            arrays[f"{net}/adam/v/{e.name}"] = np.array(v, dtype=np.float32)
        arrays[f"{net}/adam/step"] = np.asarray(int(steps[net]), dtype=np.int64)
    return arrays


def state_meta(engine):
    return {"format": STATE_FORMAT, "engine": engine}


def unpack_state(model, latent, arrays, meta):
    """(weights, moments, steps) from pack_state's dict, every name and shape checked."""
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        given = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"state: expected format {STATE_FORMAT!r}, given {given!r}")
    weights, moments, steps = {}, {}, {}
    for net, entry_list in entries(model, latent).items():

        def get(name, shape):
            if name not in arrays:
                raise ValueError(f"state: expected an array {name!r}, none given")
            a = np.asarray(arrays[name])
            if tuple(a.shape) != tuple(shape):
                raise ValueError(
                    f"state: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}"
                )
            return np.array(a, dtype=np.float32)

        weights[net] = [get(f"{net}/{e.name}", e.shape) for e in entry_list]
        learned = trainable(entry_list)
        moments[net] = (
            [get(f"{net}/adam/m/{e.name}", e.shape) for e in learned],
            [get(f"{net}/adam/v/{e.name}", e.shape) for e in learned],
        )
        if f"{net}/adam/step" not in arrays:
            raise ValueError(f"state: expected an array '{net}/adam/step', none given")
        steps[net] = int(np.asarray(arrays[f"{net}/adam/step"]))
    return weights, moments, steps


# ----------------------------------------------------------------------------- parity noise


def check_noise(noise, latent):
    """The parity hook's noise, checked: {"dis": z, "gen": z}, float32 arrays (n, latent)."""
    if not isinstance(noise, dict) or not noise or set(noise) - set(OBJECTIVES):
        raise ValueError(
            f"noise: expected a dict with keys among {list(OBJECTIVES)}, given "
            f"{sorted(noise) if isinstance(noise, dict) else type(noise).__name__}"
        )
    checked = {}
    for name in OBJECTIVES:
        if name in noise:
            z = np.asarray(noise[name], dtype=np.float32)
            if z.ndim != 2 or z.shape[1] != latent:
                raise ValueError(f"noise[{name!r}]: expected shape (n, {latent}), given {z.shape}")
            checked[name] = z
    return checked


# ----------------------------------------------------------------------------- for one engine


def framework_paths(model, latent, framework):
    """{net: (paths, trainable paths)}: each entry as (layer attribute, the framework's name for
    its role), in canonical order; every array of the network, then the trained ones."""

    def paths(chosen):
        return [(e.layer, ROLES[framework][e.role]) for e in chosen]

    return {
        net: (paths(found), paths(trainable(found)))
        for net, found in entries(model, latent).items()
    }


def state_codec(model, latent, engine):
    """The checkpoint in one uniform shape: check(weights); pack(weights, first, second, steps)
    with Adam's moments as {net: arrays} each; unpack(arrays, meta) -> (weights, first, second,
    steps); meta."""

    def pack(weights, first, second, steps):
        moments = {net: (first[net], second[net]) for net in NETWORKS}
        return pack_state(model, latent, weights, moments, steps)

    def unpack(arrays, meta):
        weights, moments, steps = unpack_state(model, latent, arrays, meta)
        first, second = ({net: moments[net][i] for net in NETWORKS} for i in (0, 1))
        return weights, first, second, steps

    return {
        "check": lambda weights: check_weights(model, latent, weights),
        "pack": pack,
        "unpack": unpack,
        "meta": state_meta(engine),
    }
