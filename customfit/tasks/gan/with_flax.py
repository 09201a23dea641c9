"""The GAN in JAX with Flax NNX: two nnx.Modules, two nnx.Optimizers (optax's Adam), one
@nnx.jit step per batch, nnx.Rngs for the latents.

Idiomatic here: `nnx.value_and_grad` differentiates with respect to its first argument's
nnx.Param variables only, so the generator's step passes (gen, dis) and gets the generator's
gradients; `optimizer.update(model, grads)` (the current API, `wrt=nnx.Param`); train()/eval()
switch batch norm; batches come from a NumPy permutation (a JAX program has no reason to import
TensorFlow). The network that is not being trained runs in training mode, but its batch
statistics are cloned before and put back after (`frozen_statistics`): in this family an update
moves its own network only (customfit/tasks/gan/layout.py).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from customfit import precision
from customfit.devices import epoch_order
from customfit.tasks.gan import layout
from customfit.weights import optax_adam_paths

ENGINE = "flax"
# Glorot-uniform kernels, as Keras starts (Flax's own default is LeCun-normal): every engine then
# starts from the same distribution. Biases start at zero, as everywhere.
glorot = nnx.initializers.glorot_uniform()


def batch_norm(channels, settings, rngs):
    return nnx.BatchNorm(channels, momentum=settings["bn_momentum"],
                         epsilon=settings["bn_epsilon"], rngs=rngs)


def conv_transpose(n_in, n_out, kernel, rngs, **kwargs):
    # transpose_kernel=True: the gradient of a convolution, as Keras's and PyTorch's transposed
    # convolutions compute it, with the kernel stored (kh, kw, out, in) as Keras stores it.
    return nnx.ConvTranspose(n_in, n_out, (kernel, kernel), transpose_kernel=True,
                             kernel_init=glorot, rngs=rngs, **kwargs)


def float32(h):
    """--precision mixed computes in bfloat16 (customfit/precision.py); what leaves a network,
    for the losses and the judge, is float32."""
    return h.astype(jnp.float32)


class LectureGenerator(nnx.Module):
    """The lecture's generator: dense 256 -> 4x4x16, batch norm, transposed convolutions
    2x2 (8), 2x2 (4), 3x3 (1, sigmoid), each hidden one followed by ReLU then batch norm."""

    def __init__(self, latent, rngs: nnx.Rngs):
        s = layout.LECTURE
        self.dense = nnx.Linear(latent, 4 * 4 * 16, kernel_init=glorot, rngs=rngs)
        self.norm0 = batch_norm(16, s, rngs)
        self.up1 = conv_transpose(16, 8, 2, rngs, padding="VALID")
        self.norm1 = batch_norm(8, s, rngs)
        self.up2 = conv_transpose(8, 4, 2, rngs, padding="VALID")
        self.norm2 = batch_norm(4, s, rngs)
        self.out = conv_transpose(4, 1, 3, rngs, padding="VALID")

    def __call__(self, z):
        h = nnx.relu(self.dense(z)).reshape(-1, 4, 4, 16)
        h = self.norm0(h)
        h = self.norm1(nnx.relu(self.up1(h)))  # 5x5
        h = self.norm2(nnx.relu(self.up2(h)))  # 6x6
        return float32(nnx.sigmoid(self.out(h)))  # 8x8


class LectureDiscriminator(nnx.Module):
    """The lecture's discriminator: 3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self, rngs: nnx.Rngs):
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding="VALID",
                                 kernel_init=glorot, rngs=rngs)
        self.conv1 = conv(1, 4)
        self.conv2 = conv(4, 8)
        self.conv3 = conv(8, 16)
        self.logit = nnx.Linear(2 * 2 * 16, 1, kernel_init=glorot, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.conv1(x))
        h = nnx.relu(self.conv2(h))
        h = nnx.relu(self.conv3(h))
        return float32(self.logit(h.reshape(h.shape[0], -1)))  # NHWC flattens in Keras's order


class Generator(nnx.Module):
    """DCGAN-like: dense -> 4x4xW, batch norm, ReLU; a 4x4 stride-2 transposed convolution to
    8x8xW/2, batch norm, ReLU; a 3x3 transposed convolution to 8x8x1, sigmoid."""

    def __init__(self, latent, rngs: nnx.Rngs):
        s = layout.DEFAULT
        w = self.width = s["width"]
        self.dense = nnx.Linear(latent, 4 * 4 * w, kernel_init=glorot, rngs=rngs)
        self.norm0 = batch_norm(w, s, rngs)
        self.up = conv_transpose(w, w // 2, 4, rngs, strides=(2, 2), padding="SAME",
                                 use_bias=False)
        self.norm1 = batch_norm(w // 2, s, rngs)
        self.out = conv_transpose(w // 2, 1, 3, rngs, padding="SAME")

    def __call__(self, z):
        h = nnx.relu(self.norm0(self.dense(z).reshape(-1, 4, 4, self.width)))
        h = nnx.relu(self.norm1(self.up(h)))
        return float32(nnx.sigmoid(self.out(h)))


class Discriminator(nnx.Module):
    """DCGAN-like: a 3x3 convolution (W/2), leaky ReLU; a 4x4 stride-2 convolution to 4x4xW,
    batch norm, leaky ReLU; a dense logit."""

    def __init__(self, rngs: nnx.Rngs):
        s = layout.DEFAULT
        w, self.slope = s["width"], s["leaky_slope"]
        self.conv1 = nnx.Conv(1, w // 2, (3, 3), padding="SAME", kernel_init=glorot, rngs=rngs)
        self.conv2 = nnx.Conv(w // 2, w, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                              kernel_init=glorot, rngs=rngs)
        self.norm = batch_norm(w, s, rngs)
        self.logit = nnx.Linear(4 * 4 * w, 1, kernel_init=glorot, rngs=rngs)

    def __call__(self, x):
        h = nnx.leaky_relu(self.conv1(x), self.slope)
        h = nnx.leaky_relu(self.norm(self.conv2(h)), self.slope)
        return float32(self.logit(h.reshape(h.shape[0], -1)))


NETWORKS = {"lecture": (LectureGenerator, LectureDiscriminator),
            "default": (Generator, Discriminator)}


@contextlib.contextmanager
def frozen_statistics(network):
    """Run `network` in training mode (batch statistics) without moving its running statistics:
    a clone of them is taken on the way in and put back on the way out."""
    saved = nnx.clone(nnx.state(network, nnx.BatchStat))
    try:
        yield network
    finally:
        nnx.update(network, saved)


def dis_loss(dis, real, fake):
    """mean softplus(-D(x)) + mean softplus(D(G(z))): the discriminator learns to tell the real
    digits (logit up) from the generator's (logit down)."""
    return nnx.softplus(-dis(real)).mean() + nnx.softplus(dis(fake)).mean()


def gen_loss(gen, dis, z):
    """mean softplus(-D(G(z))): the non-saturating generator loss."""
    return nnx.softplus(-dis(gen(z))).mean()


def fakes(gen, z):
    """The generator's digits for the discriminator's step: it is not trained there."""
    with frozen_statistics(gen):
        return jax.lax.stop_gradient(gen(z))


@functools.partial(nnx.jit, static_argnames=("critic_steps", "latent"))
def train_step(gen, dis, opt_gen, opt_dis, rngs, real, critic_steps, latent):
    n = real.shape[0]
    dis_losses = []
    for _ in range(critic_steps):  # unrolled in the trace
        fake = fakes(gen, jax.random.normal(rngs.noise(), (n, latent)))
        loss_d, grads = nnx.value_and_grad(dis_loss)(dis, real, fake)
        opt_dis.update(dis, grads)
        dis_losses.append(loss_d)
    z = jax.random.normal(rngs.noise(), (n, latent))
    with frozen_statistics(dis):
        loss_g, grads = nnx.value_and_grad(gen_loss)(gen, dis, z)  # grads: gen's nnx.Params
    opt_gen.update(gen, grads)
    return jnp.stack(dis_losses), loss_g


@functools.partial(nnx.jit, static_argnames=("latent",))
def eval_step(gen, dis, rngs, real, latent):
    n = real.shape[0]
    loss_d = dis_loss(dis, real, gen(jax.random.normal(rngs.noise(), (n, latent))))
    loss_g = gen_loss(gen, dis, jax.random.normal(rngs.noise(), (n, latent)))
    return loss_d, loss_g


@nnx.jit
def dis_value_and_grads(gen, dis, real, z):
    with frozen_statistics(dis):
        return nnx.value_and_grad(dis_loss)(dis, real, fakes(gen, z))


@nnx.jit
def gen_value_and_grads(gen, dis, z):
    with frozen_statistics(gen), frozen_statistics(dis):
        return nnx.value_and_grad(gen_loss)(gen, dis, z)


@nnx.jit
def generate_step(gen, z):
    return gen(z)


@functools.lru_cache(maxsize=None)
def adam(lr, beta_1):
    """optax's Adam (stateless: each nnx.Optimizer keeps its own moments). One object per
    setting, so that a second Trainer's optimizers match the first's and nnx.jit reuses the
    steps it compiled for it."""
    return optax.adam(lr, b1=beta_1, b2=layout.BETA_2, eps=layout.ADAM_EPSILON)


class Means:
    """Batch-size-weighted running means of named losses, as Keras's trackers keep them."""

    def __init__(self, names):
        self.sums = dict.fromkeys(names, 0.0)
        self.counts = dict.fromkeys(names, 0)

    def add(self, name, value, n):
        self.sums[name] += float(value) * n
        self.counts[name] += n

    def means(self):
        return {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}


class Trainer:
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        self.entries = layout.entries(model, latent)
        Gen, Dis = NETWORKS[model]
        rngs = nnx.Rngs(seed)
        self.gen, self.dis = Gen(latent, rngs=rngs), Dis(rngs=rngs)
        # --precision mixed: bfloat16 compute, float32 parameters (customfit/precision.py).
        precision.compute_in(self.gen), precision.compute_in(self.dis)

        tx = adam(lr, layout.MODELS[model]["beta_1"])
        self.opt_gen = nnx.Optimizer(self.gen, tx, wrt=nnx.Param)
        self.opt_dis = nnx.Optimizer(self.dis, tx, wrt=nnx.Param)
        # On several devices: networks and optimizers replicated over a mesh, each batch of real
        # digits sharded along it; train_step is the same jitted function, whose batch norm and
        # latents are the global batch's (customfit/parallel/mesh.py).
        self.mesh = None if devices == 1 else _batch_mesh(devices)
        self._replicate()

    def _replicate(self):
        if self.mesh is not None:  # new values arrive on one device: spread them again
            self.mesh.replicate(self.gen, self.dis, self.opt_gen, self.opt_dis)

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        if self.mesh is not None:
            order = epoch_order(order, self.mesh.devices)
        # The epoch's latents come from Rngs seeded here: a resumed epoch draws the same.
        rngs = nnx.Rngs(noise=layout.noise_seed(shuffle_seed))
        self.gen.train()
        self.dis.train()
        tally = Means(("dis_loss", "gen_loss"))
        for start in range(0, len(order), batch_size):
            real = x[order[start:start + batch_size]]
            n = len(real)
            if self.mesh is not None:
                real = self.mesh.shard(real)
            dis_losses, loss_g = train_step(self.gen, self.dis, self.opt_gen, self.opt_dis, rngs,
                                            real, self.critic_steps, self.latent)
            for loss_d in np.asarray(dis_losses):
                tally.add("dis_loss", loss_d, n)
            tally.add("gen_loss", loss_g, n)
            on_batch(tally.means())
        return tally.means()

    def evaluate(self, x, batch_size):
        rngs = nnx.Rngs(noise=layout.EVAL_SEED)
        self.gen.eval()
        self.dis.eval()
        tally = Means(("dis_loss", "gen_loss"))
        for start in range(0, len(x), batch_size):
            real = x[start:start + batch_size]
            loss_d, loss_g = eval_step(self.gen, self.dis, rngs, real, self.latent)
            tally.add("dis_loss", loss_d, len(real))
            tally.add("gen_loss", loss_g, len(real))
        return tally.means()

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        self.gen.eval()
        return np.array(generate_step(self.gen, jnp.asarray(z, jnp.float32)))[..., 0]

    def sample(self, n, seed):
        """n digits from n latents drawn with jax.random from `seed`."""
        return self.generate(jax.random.normal(jax.random.key(seed), (n, self.latent)))

    # ---- weights, the parity hook, state: every array in the canonical layout (layout.py)

    def _networks(self):
        return {"gen": self.gen, "dis": self.dis}

    def _variables(self, net, only_trainable=False):
        chosen = layout.trainable(self.entries[net]) if only_trainable else self.entries[net]
        return [layout.find(self._networks()[net], e, "flax") for e in chosen]

    def get_weights(self):
        return {net: [np.array(v[...], dtype=np.float32) for v in self._variables(net)]
                for net in layout.NETWORKS}

    def set_weights(self, weights):
        layout.check_weights(self.model, self.latent, weights)
        for net in layout.NETWORKS:
            for variable, value in zip(self._variables(net), weights[net]):
                variable[...] = jnp.asarray(value, jnp.float32)
        self._replicate()

    def _paths(self, net):
        """Where each trainable entry sits in the network's state: (layer, attribute)."""
        return [(e.layer, layout.ROLES["flax"][e.role])
                for e in layout.trainable(self.entries[net])]

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (see layout.py): {"dis": (value, grads), "gen": (value, grads)} for
        the objectives `noise` names, in training mode, nothing updated."""
        (x,) = batch
        noise = layout.check_noise(noise, self.latent)
        real = jnp.asarray(x, jnp.float32)
        self.gen.train()
        self.dis.train()
        answers = {}
        for name, z in noise.items():
            if name == "dis":
                loss, grads = dis_value_and_grads(self.gen, self.dis, real, jnp.asarray(z))
            else:
                loss, grads = gen_value_and_grads(self.gen, self.dis, jnp.asarray(z))
            flat = dict(nnx.to_flat_state(grads))
            answers[name] = (float(loss),
                             [np.array(flat[p].get_value()) for p in self._paths(name)])
        return answers

    def _optimizers(self):
        return {"gen": self.opt_gen, "dis": self.opt_dis}

    def _adam_paths(self, net, flat):
        return optax_adam_paths(flat, self._paths(net))

    def state(self):
        moments, steps = {}, {}
        for net in layout.NETWORKS:
            flat = dict(nnx.to_flat_state(nnx.state(self._optimizers()[net])))
            mu, nu, count = self._adam_paths(net, flat)
            moments[net] = ([np.array(flat[k].get_value()) for k in mu],
                            [np.array(flat[k].get_value()) for k in nu])
            steps[net] = int(flat[count].get_value())
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(ENGINE)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        for net in layout.NETWORKS:
            optimizer = self._optimizers()[net]
            state = nnx.state(optimizer)
            flat = dict(nnx.to_flat_state(state))
            mu, nu, count = self._adam_paths(net, flat)
            for keys, values in zip((mu, nu), moments[net]):
                for key, value in zip(keys, values):
                    flat[key].set_value(jnp.asarray(value))
            # optax counts steps for its bias correction; nnx.Optimizer counts them too.
            for key in (count, ("step",)):
                if key in flat:
                    old = flat[key].get_value()
                    flat[key].set_value(jnp.asarray(steps[net], dtype=old.dtype))
            nnx.update(optimizer, state)
        self._replicate()


def _batch_mesh(devices):
    from customfit.parallel.mesh import BatchMesh

    return BatchMesh(devices)
