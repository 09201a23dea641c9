"""Score models in Flax NNX (the lecture's exercise 9): an nnx.Module, nnx.value_and_grad, optax's
Adam through nnx.Optimizer, @nnx.jit steps. The exact divergence is the lecture's, the trace of
jax.jacfwd of the one-sample score (D,) -> (D,), vmapped; the sliced (Hutchinson) one a jax.jvp.
Random numbers: an nnx.Rngs stream fresh from each epoch's seed (a resumed run needs no random
state), jax.random keys split at every Langevin step. Plumbing: trainers/flax_trainer.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from customfit.tasks.score import layout
from customfit.trainers.flax_trainer import FlaxTrainer, RunningMeans, adam, kernels_and_biases

ENGINE = "flax"


# --8<-- [start:model]
class ScoreNet(nnx.Module):
    """s(x) (the lecture's ScoreModel), or s(x, sigma) = net([x, log sigma]) / sigma (dsm; the
    digits network scales x by 1 / sqrt(sigma^2 + sigma_data^2) first)."""

    def __init__(self, network, rngs: nnx.Rngs):
        width, hidden, out = layout.dims(network)
        self.activation = getattr(nnx, layout.NETWORKS[network]["activation"])  # nnx.softplus
        self.sigma_data = layout.NETWORKS[network]["sigma_data"]
        widths = [width, *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, hidden)])
        self.out = nnx.Linear(widths[-1], out, rngs=rngs)

    def __call__(self, x, sigma=None):
        if sigma is None:
            return self.mlp(x)
        if jnp.ndim(sigma) == 0:  # one level for the whole batch (sampling)
            sigma = jnp.full((x.shape[0], 1), sigma)
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
        jacobians = jax.vmap(jax.jacfwd(lambda xi: model(xi[None])[0]))(x)  # (B, D, D)
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
        levels = jax.random.randint(levels_key, (x.shape[0],), 0, sigmas.shape[0])
        return {"levels": levels, "z": jax.random.normal(z_key, x.shape)}
    if divergence == "hutchinson":
        return {"probe": jax.random.rademacher(key, x.shape, dtype=jnp.float32)}
    return {}


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
    noise = draw(rngs.noise(), x, sigmas, method, divergence)
    return figures(model, x, noise, sigmas, method, divergence)


def langevin_move(model, x, xi, eps, sigma):
    """One step of Langevin dynamics at temperature T: x + eps s(x) + sqrt(2 eps T) xi."""
    return x + eps * model(x, sigma) + jnp.sqrt(2.0 * eps * layout.TEMPERATURE) * xi


@nnx.jit
def langevin(model, x, key, eps, sigma, count):
    """`count` Langevin steps of size eps from x, a fresh key split off at every step."""

    def step(_, carry):
        x, key = carry
        key, xi_key = jax.random.split(key)
        return langevin_move(model, x, jax.random.normal(xi_key, x.shape), eps, sigma), key

    return jax.lax.fori_loop(0, count, step, (x, key))


# --8<-- [end:step]
score = nnx.jit(ScoreNet.__call__)  # s(x), or s(x, sigma) at one level sigma
langevin_step = nnx.jit(langevin_move)


class Trainer(FlaxTrainer):
    def __init__(
        self, method, network, lr, seed, *, sigmas=None, divergence="exact", decay_steps=None
    ):
        layout.check(method, network, divergence, sigmas)
        super().__init__()
        self.method, self.seed, self.data = method, seed, layout.NETWORKS[network]["data"]
        divergence = divergence if method == "lecture" else None
        self.static = {"method": method, "divergence": divergence}
        self.sigma_list = None if sigmas is None else np.asarray(sigmas, np.float32)
        self.sigmas = None if sigmas is None else jnp.asarray(self.sigma_list)
        self.model = model = self.initialized(lambda r: ScoreNet(network, rngs=r), seed)
        tx = adam(lr, *(layout.ADAM[k] for k in ("beta_1", "beta_2", "epsilon")), decay_steps)
        self.optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        paths = kernels_and_biases([*(("hidden", i) for i in range(len(model.hidden))), "out"])
        codec = layout.state_codec(ENGINE, method, network, divergence, self.sigma_list)
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
        step = functools.partial(eval_step, self.model, rngs, sigmas=self.sigmas, **self.static)
        return self.held_out_means((x,), batch_size, layout.FIGURES[self.method], step)

    def sigma(self, level):
        return None if level is None else self.sigmas[level]

    def score(self, x, level=None):
        return np.asarray(score(self.model, jnp.asarray(x, jnp.float32), self.sigma(level)))

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        x, xi = jnp.asarray(x, jnp.float32), jnp.asarray(noise, jnp.float32)
        return np.asarray(langevin_step(self.model, x, xi, jnp.float32(eps), self.sigma(level)))

    def denoise(self, x):
        x, last = jnp.asarray(x, jnp.float32), self.sigmas[-1]
        return np.asarray(x + last**2 * score(self.model, x, last))

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (annealed, then a denoising step, for dsm) from N(0, start_std^2 I), keys split
        off jax.random.key(seed): the samples, and frames after the steps in `record` (1-based)."""
        key, start_key = jax.random.split(jax.random.key(seed))
        x = start_std * jax.random.normal(start_key, (n, self.data))
        frames = []
        plan = layout.langevin_plan(self.method, steps, step_size, self.sigma_list)
        for level, eps, count, keep in layout.segments(plan, record):
            x, key = langevin(self.model, x, key, jnp.float32(eps), self.sigma(level), count)
            if keep:
                frames.append(np.asarray(x))
        x = self.denoise(x) if self.method == "dsm" else np.asarray(x)
        return x, np.asarray(frames, np.float32).reshape(len(frames), n, self.data)

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,), with the
        objective's draws given: None (exact divergence), {"probe"} or {"levels", "z"}."""
        dtypes = {"levels": jnp.int32}  # the other draws are float32
        given = {k: jnp.asarray(v, dtypes.get(k, jnp.float32)) for k, v in (noise or {}).items()}
        x = jnp.asarray(batch[0], jnp.float32)
        return self.parity(figures, self.model, x, given, self.sigmas, options=self.static.items())
