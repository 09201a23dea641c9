"""The VAE in JAX with Flax NNX: nnx.Module encoder and decoder, nnx.value_and_grad, optax's Adam
through nnx.Optimizer(model, tx, wrt=nnx.Param), @nnx.jit steps.

The reparameterisation noise comes from an nnx.Rngs stream ("noise") handed to the step, as the
Flax NNX guides do for dropout: a fresh nnx.Rngs(noise=epoch seed) per epoch makes an epoch's
noise a function of the run's seed and the epoch alone, so a resumed run needs no random state.
Batches come from a NumPy permutation: a JAX program has no reason to import TensorFlow.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from customfit import precision
from customfit.devices import epoch_order
from customfit.tasks.vae import layout
from customfit.weights import optax_adam_paths

ENGINE = "flax"


def float32(h):
    """--precision mixed computes in bfloat16 (customfit/precision.py); what leaves a network,
    for the losses and the judge, is float32."""
    return h.astype(jnp.float32)


class MLPEncoder(nnx.Module):
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
        return float32(self.mu(h)), float32(self.logvar(h))

    def weighted_layers(self):
        return [self.hidden1, self.hidden2, self.mu, self.logvar]


class MLPDecoder(nnx.Module):
    def __init__(self, latent, rngs: nnx.Rngs):
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = nnx.Linear(latent, h2, rngs=rngs)
        self.hidden2 = nnx.Linear(h2, h1, rngs=rngs)
        self.out = nnx.Linear(h1, layout.PIXELS, rngs=rngs)

    def __call__(self, z):
        h = nnx.relu(self.hidden1(z))
        h = nnx.relu(self.hidden2(h))
        return float32(nnx.sigmoid(self.out(h)).reshape(-1, *layout.IMAGE))

    def weighted_layers(self):
        return [self.hidden1, self.hidden2, self.out]


class ConvEncoder(nnx.Module):
    """The lecture's encoder: three 3x3 valid convolutions (4, 8, 16), then mu and log-variance."""

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
        return float32(self.mu(h)), float32(self.logvar(h))

    def weighted_layers(self):
        return [self.conv1, self.conv2, self.conv3, self.mu, self.logvar]


class ConvDecoder(nnx.Module):
    """The lecture's decoder: dense 256, reshape 4x4x16, conv-transposes 8, 4 (2x2), 1 (3x3)."""

    def __init__(self, latent, rngs: nnx.Rngs):
        spec = layout.CONV_DECODER
        channels = spec["reshape"][-1]
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.dense = nnx.Linear(latent, spec["dense"], rngs=rngs)
        # transpose_kernel=True: the gradient of a convolution, as Keras's and torch's
        # conv-transposes are, with the kernel stored (kh, kw, out, in) as Keras stores it.
        deconv = functools.partial(nnx.ConvTranspose, padding="VALID", transpose_kernel=True,
                                   rngs=rngs)
        self.deconv1 = deconv(channels, f1, (k1, k1))
        self.deconv2 = deconv(f1, f2, (k2, k2))
        self.deconv3 = deconv(f2, f3, (k3, k3))

    def __call__(self, z):
        h = nnx.relu(self.dense(z)).reshape(-1, *layout.CONV_DECODER["reshape"])
        h = nnx.leaky_relu(self.deconv1(h), negative_slope=layout.LEAKY_SLOPE)  # Flax's default: 0.01
        h = nnx.leaky_relu(self.deconv2(h), negative_slope=layout.LEAKY_SLOPE)
        return float32(nnx.sigmoid(self.deconv3(h)))

    def weighted_layers(self):
        return [self.dense, self.deconv1, self.deconv2, self.deconv3]


class VAE(nnx.Module):
    def __init__(self, network, latent, rngs: nnx.Rngs):
        self.latent = latent
        self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent, rngs)
        self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent, rngs)

    def __call__(self, x, eps):
        """(x_hat, mu, logvar) for noise eps (B, latent); the encoder runs once."""
        mu, logvar = self.encoder(x)
        return self.decoder(mu + eps * jnp.exp(0.5 * logvar)), mu, logvar


def vae_figures(x, x_hat, mu, logvar, temperature, objective):
    """The figures of one batch (see layout's docstring): loss = kl + reconstruction, and the
    negative ELBO per image of the Gaussian decoder of variance T, constant included."""
    kl_terms = 0.5 * (mu ** 2 + jnp.exp(logvar) - 1.0 - logvar)
    squares = (x - x_hat) ** 2
    kl_per_image = kl_terms.sum(axis=1)
    squares_per_image = squares.reshape(squares.shape[0], -1).sum(axis=1)
    if objective == "elbo":
        kl = kl_per_image.mean()
        reconstruction = squares_per_image.mean() / (2.0 * temperature)
    else:  # the lecture's: means over the batch and the dimensions alike
        kl = kl_terms.mean()
        reconstruction = squares.mean() / (2.0 * temperature)
    neg_elbo = ((kl_per_image + squares_per_image / (2.0 * temperature)).mean()
                + layout.gaussian_constant(temperature))
    return {"loss": kl + reconstruction, "kl": kl, "reconstruction": reconstruction,
            "neg_elbo": neg_elbo}


# The model has no dropout and no batch-norm: the same __call__ serves training and evaluation.

@functools.partial(nnx.jit, static_argnames=("temperature", "objective"))
def train_step(model, optimizer, rngs, x, temperature, objective):
    eps = jax.random.normal(rngs.noise(), (x.shape[0], model.latent))

    def loss_fn(model):
        figures = vae_figures(x, *model(x, eps), temperature, objective)
        return figures["loss"], figures

    (_, figures), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return figures


@functools.partial(nnx.jit, static_argnames=("temperature", "objective"))
def eval_step(model, rngs, x, temperature, objective):
    eps = jax.random.normal(rngs.noise(), (x.shape[0], model.latent))
    return vae_figures(x, *model(x, eps), temperature, objective)


@functools.partial(nnx.jit, static_argnames=("temperature", "objective"))
def loss_and_grad_step(model, x, eps, temperature, objective):
    return nnx.value_and_grad(
        lambda model: vae_figures(x, *model(x, eps), temperature, objective)["loss"])(model)


class Trainer:
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        self.network, self.objective, self.latent = network, objective, latent
        self.temperature, self.seed = float(temperature), seed
        self._shapes = layout.canonical_shapes(network, latent)
        # --precision mixed: bfloat16 compute, float32 parameters (customfit/precision.py).
        self.model = precision.compute_in(VAE(network, latent, rngs=nnx.Rngs(seed)))
        tx = optax.adam(lr, b1=layout.ADAM["beta_1"], b2=layout.ADAM["beta_2"],
                        eps=layout.ADAM["epsilon"])
        self.optimizer = nnx.Optimizer(self.model, tx, wrt=nnx.Param)
        # On several devices: the weights and Adam's moments replicated over a mesh, each batch
        # sharded along it; train_step is the same jitted function, whose noise is the global
        # batch's (customfit/parallel/mesh.py).
        self.mesh = None if devices == 1 else _batch_mesh(devices)
        self._replicate()

    def _replicate(self):
        if self.mesh is not None:  # new values arrive on one device: spread them again
            self.mesh.replicate(self.model, self.optimizer)

    def _static(self):
        return {"temperature": self.temperature, "objective": self.objective}

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        if self.mesh is not None:
            order = epoch_order(order, self.mesh.devices)
        rngs = nnx.Rngs(noise=shuffle_seed)
        means = layout.RunningMeans()
        for start in range(0, len(order), batch_size):
            batch = x[order[start:start + batch_size]]
            n = len(batch)
            if self.mesh is not None:
                batch = self.mesh.shard(batch)
            figures = train_step(self.model, self.optimizer, rngs, batch, **self._static())
            means.add(figures, n)
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        rngs = nnx.Rngs(noise=self.seed)  # the same held-out noise at every call
        means = layout.RunningMeans()
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            means.add(eval_step(self.model, rngs, batch, **self._static()), len(batch))
        return means.means()

    # ---- what the spec asks after training

    def encode(self, x):
        mu, logvar = self.model.encoder(jnp.asarray(x, jnp.float32))
        return np.asarray(mu), np.asarray(logvar)

    def decode(self, z):
        return np.asarray(self.model.decoder(jnp.asarray(z, jnp.float32)))[..., 0]

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z drawn from nnx.Rngs(sample=seed)."""
        z = jax.random.normal(nnx.Rngs(sample=seed).sample(), (n, self.latent))
        return self.decode(scale * z)

    # ---- weights, the parity hook, state

    def _paths(self):
        """Each canonical weight's path in the model's state, in canonical order."""
        paths = {}
        for net in layout.NETS:
            module = getattr(self.model, net)
            names = [name for name, value in vars(module).items() if isinstance(value, nnx.Module)]
            by_id = {id(getattr(module, name)): name for name in names}
            paths[net] = [(net, by_id[id(layer)], kind) for layer in module.weighted_layers()
                          for kind in ("kernel", "bias")]
        return paths

    def _params(self):
        """The nnx.Param variables, in canonical order: kernel, bias, kernel, ..."""
        return {net: [getattr(layer, kind) for layer in getattr(self.model, net).weighted_layers()
                      for kind in ("kernel", "bias")] for net in layout.NETS}

    def get_weights(self):
        return layout.copied({net: [np.asarray(p[...]) for p in params]
                              for net, params in self._params().items()})

    def set_weights(self, weights):
        layout.check_weights(self._shapes, weights)
        for net, params in self._params().items():
            for param, value in zip(params, weights[net]):
                param[...] = jnp.asarray(value)
        self._replicate()

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,) with the
        reparameterisation noise `noise` (B, latent) given; no update."""
        (x,) = batch
        loss, grads = loss_and_grad_step(self.model, jnp.asarray(x, jnp.float32),
                                         jnp.asarray(noise, jnp.float32), **self._static())
        flat = dict(nnx.to_flat_state(grads))
        return float(loss), layout.copied(
            {net: [np.asarray(flat[path].get_value()) for path in paths]
             for net, paths in self._paths().items()})

    def _adam_paths(self, flat):
        paths = self._paths()
        found = {net: optax_adam_paths(flat, paths[net]) for net in layout.NETS}
        count = found[layout.NETS[0]][2]  # one optimizer for both networks: one step count
        return ({net: found[net][0] for net in layout.NETS},
                {net: found[net][1] for net in layout.NETS}, count)

    def state(self):
        flat = dict(nnx.to_flat_state(nnx.state(self.optimizer)))
        mu, nu, count = self._adam_paths(flat)
        read = lambda keys: {net: [np.asarray(flat[k].get_value()) for k in keys[net]]  # noqa: E731
                             for net in layout.NETS}
        arrays = layout.pack_state(self.get_weights(), read(mu), read(nu),
                                   int(flat[count].get_value()))
        return arrays, layout.state_meta(ENGINE, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self._shapes)
        self.set_weights(weights)
        state = nnx.state(self.optimizer)
        flat = dict(nnx.to_flat_state(state))
        mu, nu, count = self._adam_paths(flat)
        for keys, values in ((mu, first), (nu, second)):
            for net in layout.NETS:
                for key, value in zip(keys[net], values[net]):
                    flat[key].set_value(jnp.asarray(value))
        # optax counts steps for its bias correction; nnx.Optimizer counts them too.
        for key in (count, ("step",)):
            if key in flat:
                old = flat[key].get_value()
                flat[key].set_value(jnp.asarray(step, dtype=old.dtype))
        nnx.update(self.optimizer, state)
        self._replicate()


def _batch_mesh(devices):
    from customfit.parallel.mesh import BatchMesh

    return BatchMesh(devices)
