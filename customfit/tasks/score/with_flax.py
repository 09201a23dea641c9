"""Score models in JAX with Flax NNX: an nnx.Module, nnx.value_and_grad, optax's Adam through
nnx.Optimizer(model, tx, wrt=nnx.Param), @nnx.jit steps. This is the lecture's exercise 9.

The exact divergence is the lecture's: jax.jacfwd of the one-sample score (D,) -> (D,), vmapped
over the batch, and its trace; the sliced (Hutchinson) estimate is a Jacobian-vector product,
jax.jvp. Both sit inside the loss that nnx.value_and_grad differentiates with respect to the
weights.

Random numbers are JAX's own: an nnx.Rngs stream ("noise") handed to the training step, fresh
from the epoch's seed at every epoch (so a resumed run needs no random state), and explicit
jax.random keys, split at every step, for Langevin sampling (the lecture's code drew them from
NumPy's global state). The plumbing (precision, batches, canonical weights and Adam state) is
customfit/trainers/flax_trainer.py's.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from customfit.tasks.score import layout
from customfit.trainers.flax_trainer import FlaxTrainer, RunningMeans, adam

ENGINE = "flax"
ACTIVATIONS = {"softplus": nnx.softplus, "silu": nnx.silu}


# --8<-- [start:model]


class ScoreNet(nnx.Module):
    """s(x) (the lecture's ScoreModel), or s(x, sigma) = net([x, log sigma]) / sigma (dsm; the
    digits network scales x by 1 / sqrt(sigma^2 + sigma_data^2) first)."""

    def __init__(self, network, rngs: nnx.Rngs):
        width, hidden, out = layout.dims(network)
        self.activation = ACTIVATIONS[layout.NETWORKS[network]["activation"]]
        self.sigma_data = layout.NETWORKS[network]["sigma_data"]
        layers = []
        for units in hidden:
            layers.append(nnx.Linear(width, units, rngs=rngs))
            width = units
        self.hidden = nnx.List(layers)
        self.out = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x, sigma=None):
        if sigma is None:
            return self.mlp(x)
        if self.sigma_data is not None:
            x = x / jnp.sqrt(sigma**2 + self.sigma_data**2)
        return self.mlp(jnp.concatenate([x, jnp.log(sigma)], axis=-1)) / sigma

    def mlp(self, h):
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.out(h).astype(jnp.float32)  # --precision mixed computes in bfloat16


# --8<-- [end:model]


# --8<-- [start:objective]
def score_matching(model, x, divergence, probe=None):
    """The lecture's loss, mean |s|^2 + 2 div s, with its two parts."""
    s = model(x)
    if divergence == "exact":
        one = lambda xi: model(xi[None])[0]  # (D,) -> (D,)  # noqa: E731
        jacobians = jax.vmap(jax.jacfwd(one))(x)  # (B, D, D)
        div = jnp.trace(jacobians, axis1=1, axis2=2)
    else:
        _, jv = jax.jvp(model, (x,), (probe,))  # J v, sample by sample
        div = jnp.sum(probe * jv, axis=1)
    squared_norm = jnp.mean(jnp.sum(s**2, axis=1))
    div = jnp.mean(div)
    return {"loss": squared_norm + 2.0 * div, "squared_norm": squared_norm, "divergence": div}


def denoising_score_matching(model, x, sigma, z):
    """mean | sigma s(x + sigma z, sigma) + z |^2; sigma (B, 1), one noise level per sample."""
    s = model(x + sigma * z, sigma)
    return {"loss": jnp.mean(jnp.sum((sigma * s + z) ** 2, axis=1))}


def figures(model, x, noise, sigmas, method, divergence):
    if method == "dsm":
        sigma = sigmas[noise["levels"]][:, None]
        return denoising_score_matching(model, x, sigma, noise["z"])
    return score_matching(model, x, divergence, noise.get("probe"))


def draw(key, x, sigmas, method, divergence):
    """The objective's random draws for batch x: {} (exact), a probe, or levels and noise."""
    if method == "dsm":
        levels_key, z_key = jax.random.split(key)
        return {
            "levels": jax.random.randint(levels_key, (x.shape[0],), 0, sigmas.shape[0]),
            "z": jax.random.normal(z_key, x.shape),
        }
    if divergence == "hutchinson":
        return {"probe": jax.random.rademacher(key, x.shape, dtype=jnp.float32)}
    return {}


def loss(model, x, noise, sigmas, method, divergence):
    return figures(model, x, noise, sigmas, method, divergence)["loss"]


# --8<-- [end:objective]


# --8<-- [start:step]
@functools.partial(nnx.jit, static_argnames=("method", "divergence"))
def train_step(model, optimizer, rngs, x, sigmas, method, divergence):
    noise = draw(rngs.noise(), x, sigmas, method, divergence)

    def loss_fn(model):
        out = figures(model, x, noise, sigmas, method, divergence)
        return out["loss"], out

    (_, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return out


@functools.partial(nnx.jit, static_argnames=("method", "divergence"))
def eval_step(model, rngs, x, sigmas, method, divergence):
    return figures(
        model, x, draw(rngs.noise(), x, sigmas, method, divergence), sigmas, method, divergence
    )


def at_level(model, x, sigma):
    """s(x) for the lecture's unconditional model (sigma None), else s(x, sigma) at one level."""
    return model(x) if sigma is None else model(x, jnp.full((x.shape[0], 1), sigma))


@nnx.jit
def langevin_step(model, x, xi, eps, sigma):
    return x + eps * at_level(model, x, sigma) + jnp.sqrt(2.0 * eps * layout.TEMPERATURE) * xi


@nnx.jit
def langevin(model, x, key, eps, sigma, count):
    """`count` Langevin steps of size eps from x, a fresh key split off at every step."""

    def step(_, carry):
        x, key = carry
        key, xi_key = jax.random.split(key)
        xi = jax.random.normal(xi_key, x.shape)
        s = at_level(model, x, sigma)
        return x + eps * s + jnp.sqrt(2.0 * eps * layout.TEMPERATURE) * xi, key

    return jax.lax.fori_loop(0, count, step, (x, key))


# --8<-- [end:step]


score = nnx.jit(at_level)


class Trainer(FlaxTrainer):
    def __init__(
        self, method, network, lr, seed, *, sigmas=None, divergence="exact", decay_steps=None
    ):
        layout.check(method, network, divergence, sigmas)
        super().__init__()
        self.method, self.seed, self.data = method, seed, layout.NETWORKS[network]["data"]
        divergence = divergence if method == "lecture" else None
        self.static = {"method": method, "divergence": divergence}
        self.sigmas = None if sigmas is None else jnp.asarray(np.asarray(sigmas, np.float32))
        model = self.model = ScoreNet(network, rngs=nnx.Rngs(seed))
        beta_1, beta_2, epsilon = (layout.ADAM[k] for k in ("beta_1", "beta_2", "epsilon"))
        self.optimizer = nnx.Optimizer(
            model, adam(lr, beta_1, beta_2, epsilon, decay_steps), wrt=nnx.Param
        )
        self.place(model, self.optimizer)
        layers = [("hidden", i) for i in range(len(model.hidden))] + [("out",)]
        paths = [(*layer, kind) for layer in layers for kind in ("kernel", "bias")]
        sigma_list = None if sigmas is None else np.asarray(self.sigmas)
        codec = layout.state_codec(ENGINE, method, network, divergence, sigma_list)
        self.keep({"model": (model, self.optimizer)}, {"model": paths}, codec)

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        rngs = nnx.Rngs(noise=shuffle_seed)
        means = RunningMeans(layout.FIGURES[self.method])
        for (batch,) in self.epoch_batches((x,), batch_size, shuffle_seed):
            out = train_step(self.model, self.optimizer, rngs, batch, self.sigmas, **self.static)
            means.add_all(out, len(batch))
            on_batch(means.means())
        return means.means()

    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        rngs = nnx.Rngs(noise=self.seed)  # the same held-out draws at every call
        step = lambda batch: eval_step(self.model, rngs, batch, self.sigmas, **self.static)  # noqa: E731
        return self.held_out_means((x,), batch_size, layout.FIGURES[self.method], step)

    # ---- the score and Langevin sampling

    def _sigma(self, level):
        return None if level is None else self.sigmas[level]

    def score(self, x, level=None):
        return np.asarray(score(self.model, jnp.asarray(x, jnp.float32), self._sigma(level)))

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        return np.asarray(
            langevin_step(
                self.model,
                jnp.asarray(x, jnp.float32),
                jnp.asarray(noise, jnp.float32),
                jnp.float32(eps),
                self._sigma(level),
            )
        )

    def denoise(self, x):
        x = jnp.asarray(x, jnp.float32)
        last = self.sigmas[-1]
        return np.asarray(x + last**2 * score(self.model, x, last))

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (lecture) or annealed Langevin and a last denoising step (dsm) from
        N(0, start_std^2 I), every draw from jax.random.key(seed), split as it goes. Returns the
        samples and the states after the steps numbered in `record` (frames, 1 = the first)."""
        key, start_key = jax.random.split(jax.random.key(seed))
        x = start_std * jax.random.normal(start_key, (n, self.data))
        frames = []
        sigmas = None if self.sigmas is None else np.asarray(self.sigmas)
        plan = layout.langevin_plan(self.method, steps, step_size, sigmas)
        for level, eps, count, keep in layout.segments(plan, record):
            x, key = langevin(self.model, x, key, jnp.float32(eps), self._sigma(level), count)
            if keep:
                frames.append(np.asarray(x))
        x = np.asarray(x)
        if self.method == "dsm":
            x = self.denoise(x)
        return x, np.asarray(frames, np.float32).reshape(len(frames), n, self.data)

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,), with the
        objective's draws given: None (exact divergence), {"probe"} or {"levels", "z"}."""
        given = (
            {}
            if noise is None
            else {
                k: jnp.asarray(v, jnp.int32 if k == "levels" else jnp.float32)
                for k, v in noise.items()
            }
        )
        x = jnp.asarray(batch[0], jnp.float32)
        return self.parity(loss, self.model, x, given, self.sigmas, options=self.static.items())
