"""The VAE in Flax NNX: nnx.Module encoder and decoder, nnx.value_and_grad, optax's Adam through
nnx.Optimizer, @nnx.jit steps. The reparameterisation noise comes from an nnx.Rngs stream ("noise")
handed to the step, as the Flax NNX guides do for dropout, fresh from the epoch's seed at every
epoch: a resumed run needs no random state. Plumbing: customfit/trainers/flax_trainer.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from customfit.tasks.vae import layout
from customfit.trainers.flax_trainer import FlaxTrainer, RunningMeans, adam, kernels_and_biases

ENGINE = "flax"


# --8<-- [start:model]
# Under --precision mixed the layers compute in bfloat16; what leaves a network, for the losses
# and the judge, is float32. Each network names its weighted layers in canonical order.
class MLPEncoder(nnx.Module):
    weighted = ("hidden1", "hidden2", "mu", "logvar")

    def __init__(self, latent, rngs: nnx.Rngs):
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = nnx.Linear(layout.PIXELS, h1, rngs=rngs)
        self.hidden2 = nnx.Linear(h1, h2, rngs=rngs)
        self.mu = nnx.Linear(h2, latent, rngs=rngs)
        self.logvar = nnx.Linear(h2, latent, rngs=rngs)

    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)  # NHWC -> (N, H*W*C): Keras's order
        h = nnx.relu(self.hidden1(h))
        h = nnx.relu(self.hidden2(h))
        return self.mu(h).astype(jnp.float32), self.logvar(h).astype(jnp.float32)


class MLPDecoder(nnx.Module):
    weighted = ("hidden1", "hidden2", "out")

    def __init__(self, latent, rngs: nnx.Rngs):
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = nnx.Linear(latent, h2, rngs=rngs)
        self.hidden2 = nnx.Linear(h2, h1, rngs=rngs)
        self.out = nnx.Linear(h1, layout.PIXELS, rngs=rngs)

    def __call__(self, z):
        h = nnx.relu(self.hidden1(z))
        h = nnx.relu(self.hidden2(h))
        return nnx.sigmoid(self.out(h)).reshape(-1, *layout.IMAGE).astype(jnp.float32)


class ConvEncoder(nnx.Module):
    """The lecture's encoder: three 3x3 valid convolutions (4, 8, 16), then mu and log-variance."""

    weighted = ("conv1", "conv2", "conv3", "mu", "logvar")

    def __init__(self, latent, rngs: nnx.Rngs):
        f1, f2, f3 = layout.CONV_FILTERS
        self.conv1 = nnx.Conv(1, f1, (3, 3), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(f1, f2, (3, 3), padding="VALID", rngs=rngs)
        self.conv3 = nnx.Conv(f2, f3, (3, 3), padding="VALID", rngs=rngs)
        self.mu = nnx.Linear(2 * 2 * f3, latent, rngs=rngs)
        self.logvar = nnx.Linear(2 * 2 * f3, latent, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.conv1(x))
        h = nnx.relu(self.conv2(h))
        h = nnx.relu(self.conv3(h))
        h = h.reshape(h.shape[0], -1)
        return self.mu(h).astype(jnp.float32), self.logvar(h).astype(jnp.float32)


class ConvDecoder(nnx.Module):
    """The lecture's decoder: dense 256, reshape 4x4x16, conv-transposes 8, 4 (2x2), 1 (3x3)."""

    weighted = ("dense", "deconv1", "deconv2", "deconv3")

    def __init__(self, latent, rngs: nnx.Rngs):
        spec = layout.CONV_DECODER
        channels = spec["reshape"][-1]
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.dense = nnx.Linear(latent, spec["dense"], rngs=rngs)
        # transpose_kernel=True: the gradient of a convolution, as Keras's and torch's
        # conv-transposes are, with the kernel stored (kh, kw, out, in) as Keras stores it.
        deconv = functools.partial(nnx.ConvTranspose, padding="VALID", transpose_kernel=True)
        self.deconv1 = deconv(channels, f1, (k1, k1), rngs=rngs)
        self.deconv2 = deconv(f1, f2, (k2, k2), rngs=rngs)
        self.deconv3 = deconv(f2, f3, (k3, k3), rngs=rngs)

    def __call__(self, z):
        h = nnx.relu(self.dense(z)).reshape(-1, *layout.CONV_DECODER["reshape"])
        h = nnx.leaky_relu(self.deconv1(h), negative_slope=layout.LEAKY_SLOPE)  # not Flax's 0.01
        h = nnx.leaky_relu(self.deconv2(h), negative_slope=layout.LEAKY_SLOPE)
        return nnx.sigmoid(self.deconv3(h)).astype(jnp.float32)


class VAE(nnx.Module):
    def __init__(self, network, latent, rngs: nnx.Rngs):
        self.latent = latent
        self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent, rngs)
        self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent, rngs)

    def __call__(self, x, eps):
        """(x_hat, mu, logvar) for noise eps (B, latent); the encoder runs once."""
        mu, logvar = self.encoder(x)
        return self.decoder(mu + eps * jnp.exp(0.5 * logvar)), mu, logvar


# --8<-- [end:model]
# --8<-- [start:objective]
def vae_figures(model, x, eps, temperature, objective):
    """The figures of batch x with noise eps (see layout's docstring): loss = kl + reconstruction,
    and the negative ELBO per image of the Gaussian decoder of variance T, constant included."""
    x_hat, mu, logvar = model(x, eps)
    kl_terms = 0.5 * (mu**2 + jnp.exp(logvar) - 1.0 - logvar)
    squares = (x - x_hat) ** 2
    kl_per_image = kl_terms.sum(axis=1)
    squares_per_image = squares.reshape(squares.shape[0], -1).sum(axis=1)
    if objective == "elbo":
        kl = kl_per_image.mean()
        reconstruction = squares_per_image.mean() / (2.0 * temperature)
    else:  # the lecture's: means over the batch and the dimensions alike
        kl = kl_terms.mean()
        reconstruction = squares.mean() / (2.0 * temperature)
    neg_elbo_per_image = kl_per_image + squares_per_image / (2.0 * temperature)
    neg_elbo = neg_elbo_per_image.mean() + layout.gaussian_constant(temperature)
    return dict(loss=kl + reconstruction, kl=kl, reconstruction=reconstruction, neg_elbo=neg_elbo)


# --8<-- [end:objective]
# --8<-- [start:step]
# The model has no dropout and no batch-norm: the same __call__ serves training and evaluation.
@functools.partial(nnx.jit, static_argnames=("temperature", "objective"))
def train_step(model, optimizer, rngs, x, temperature, objective):
    eps = jax.random.normal(rngs.noise(), (x.shape[0], model.latent))

    def loss_fn(model):
        figures = vae_figures(model, x, eps, temperature, objective)
        return figures["loss"], figures

    (_, figures), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return figures


@functools.partial(nnx.jit, static_argnames=("temperature", "objective"))
def eval_step(model, rngs, x, temperature, objective):
    eps = jax.random.normal(rngs.noise(), (x.shape[0], model.latent))
    return vae_figures(model, x, eps, temperature, objective)


# --8<-- [end:step]
class Trainer(FlaxTrainer):
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        super().__init__(devices)
        self.latent, self.seed = latent, seed
        self.static = {"temperature": float(temperature), "objective": objective}
        self.model = model = self.initialized(lambda r: VAE(network, latent, rngs=r), seed)
        tx = adam(lr, layout.ADAM["beta_1"], layout.ADAM["beta_2"], layout.ADAM["epsilon"])
        self.optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)  # one for both networks
        paths = {n: kernels_and_biases(getattr(model, n).weighted, (n,)) for n in layout.NETS}
        codec = layout.state_codec(network, objective, latent, ENGINE)
        self.keep(dict.fromkeys(layout.NETS, (model, self.optimizer)), paths, codec)

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        rngs = nnx.Rngs(noise=shuffle_seed)
        means = RunningMeans(layout.FIGURES)
        for (batch,) in self.epoch_batches((x,), batch_size, shuffle_seed):
            figures = train_step(self.model, self.optimizer, rngs, batch, **self.static)
            means.add_all(figures, len(batch))
            on_batch(means.means())
        return means.means()
        # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        rngs = nnx.Rngs(noise=self.seed)  # the same held-out noise at every call
        step = functools.partial(eval_step, self.model, rngs, **self.static)
        return self.held_out_means((x,), batch_size, layout.FIGURES, step)

    def encode(self, x):
        mu, logvar = self.model.encoder(jnp.asarray(x, jnp.float32))
        return np.asarray(mu), np.asarray(logvar)

    def decode(self, z):
        return np.asarray(self.model.decoder(jnp.asarray(z, jnp.float32)))[..., 0]

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z drawn from nnx.Rngs(sample=seed)."""
        z = jax.random.normal(nnx.Rngs(sample=seed).sample(), (n, self.latent))
        return self.decode(scale * z)

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,) with the
        reparameterisation noise `noise` (B, latent) given; no update."""
        x, eps = jnp.asarray(batch[0], jnp.float32), jnp.asarray(noise, jnp.float32)
        return self.parity(vae_figures, self.model, x, eps, options=self.static.items())
