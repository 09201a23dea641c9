"""The GAN in JAX with Flax NNX: two nnx.Modules, two nnx.Optimizers (optax's Adam), one
@nnx.jit step per batch, nnx.Rngs for the latents.

`nnx.value_and_grad` differentiates with respect to its first argument's nnx.Params only, so the
generator's step passes (gen, dis) and gets the generator's gradients; train()/eval() switch
batch norm. The network not being trained runs in training mode with its batch statistics put
back after (`frozen_statistics`): an update moves its own network only (layout.py).
The plumbing (devices, precision, batches, canonical weights and Adam state) is
customfit/trainers/flax_trainer.py's; the Trainer here says where its arrays live.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from customfit.tasks.gan import layout
from customfit.trainers.flax_trainer import FlaxTrainer, Group, adam, value_and_grads
from customfit.trainers.running_means import RunningMeans

ENGINE = "flax"


# --8<-- [start:model]
# Glorot-uniform kernels, as Keras starts (Flax's own default is LeCun-normal): every engine then
# starts from the same distribution. Biases start at zero, as everywhere. Under --precision mixed
# the layers compute in bfloat16; what leaves a network, for the losses and the judge, is float32.
glorot = nnx.initializers.glorot_uniform()


def batch_norm(channels, settings, rngs):
    return nnx.BatchNorm(channels, momentum=settings["bn_momentum"],
                         epsilon=settings["bn_epsilon"], rngs=rngs)


def conv_transpose(n_in, n_out, kernel, rngs, **kwargs):
    # transpose_kernel=True: the gradient of a convolution, as Keras's and PyTorch's transposed
    # convolutions compute it, with the kernel stored (kh, kw, out, in) as Keras stores it.
    return nnx.ConvTranspose(n_in, n_out, (kernel, kernel), transpose_kernel=True,
                             kernel_init=glorot, rngs=rngs, **kwargs)


class LectureGenerator(nnx.Module):
    """Dense 256 -> 4x4x16, batch norm; transposed convolutions 2x2 (8), 2x2 (4), 3x3 (1,
    sigmoid), each hidden one followed by ReLU then batch norm."""

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
        h = self.norm0(nnx.relu(self.dense(z)).reshape(-1, 4, 4, 16))
        h = self.norm1(nnx.relu(self.up1(h)))  # 5x5
        h = self.norm2(nnx.relu(self.up2(h)))  # 6x6
        return nnx.sigmoid(self.out(h)).astype(jnp.float32)  # 8x8


class LectureDiscriminator(nnx.Module):
    """3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self, rngs: nnx.Rngs):
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding="VALID",
                                 kernel_init=glorot, rngs=rngs)
        self.conv1, self.conv2, self.conv3 = conv(1, 4), conv(4, 8), conv(8, 16)
        self.logit = nnx.Linear(2 * 2 * 16, 1, kernel_init=glorot, rngs=rngs)

    def __call__(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = nnx.relu(conv(x))
        return self.logit(x.reshape(x.shape[0], -1)).astype(jnp.float32)  # NHWC: Keras's order


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
        return nnx.sigmoid(self.out(h)).astype(jnp.float32)


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
        return self.logit(h.reshape(h.shape[0], -1)).astype(jnp.float32)


NETWORKS = {"lecture": (LectureGenerator, LectureDiscriminator),
            "default": (Generator, Discriminator)}
# --8<-- [end:model]


@contextlib.contextmanager
def frozen_statistics(network):
    """`network` in training mode (batch statistics) with its running statistics left as they
    were: a clone taken on the way in is put back on the way out."""
    saved = nnx.clone(nnx.state(network, nnx.BatchStat))
    try:
        yield network
    finally:
        nnx.update(network, saved)


# --8<-- [start:objective]
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


def dis_objective(dis, gen, real, z):
    """The discriminator's loss on the generator's digits from latents z."""
    return dis_loss(dis, real, fakes(gen, z))
# --8<-- [end:objective]


# --8<-- [start:step]
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
# --8<-- [end:step]


@nnx.jit
def generate_step(gen, z):
    return gen(z)


class Trainer(FlaxTrainer):
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        super().__init__(devices)
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        Gen, Dis = NETWORKS[model]
        rngs = nnx.Rngs(seed)
        self.gen, self.dis = Gen(latent, rngs=rngs), Dis(rngs=rngs)
        tx = adam(lr, layout.MODELS[model]["beta_1"], layout.BETA_2, layout.ADAM_EPSILON)
        self.opt_gen = nnx.Optimizer(self.gen, tx, wrt=nnx.Param)
        self.opt_dis = nnx.Optimizer(self.dis, tx, wrt=nnx.Param)
        self.place(self.gen, self.dis, self.opt_gen, self.opt_dis)

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        # The epoch's latents come from Rngs seeded here: a resumed epoch draws the same.
        rngs = nnx.Rngs(noise=layout.noise_seed(shuffle_seed))
        self.gen.train()
        self.dis.train()
        means = RunningMeans(("dis_loss", "gen_loss"))
        for (real,) in self.epoch_batches((x,), batch_size, shuffle_seed):
            dis_losses, loss_g = train_step(self.gen, self.dis, self.opt_gen, self.opt_dis, rngs,
                                            real, self.critic_steps, self.latent)
            for loss_d in np.asarray(dis_losses):
                means.add("dis_loss", loss_d, len(real))
            means.add("gen_loss", loss_g, len(real))
            on_batch(means.means())
        return means.means()
    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        rngs = nnx.Rngs(noise=layout.EVAL_SEED)
        self.gen.eval()
        self.dis.eval()
        means = RunningMeans(("dis_loss", "gen_loss"))
        for (real,) in self.held_out_batches((x,), batch_size):
            loss_d, loss_g = eval_step(self.gen, self.dis, rngs, real, self.latent)
            means.add_all({"dis_loss": loss_d, "gen_loss": loss_g}, len(real))
        return means.means()

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        self.gen.eval()
        return np.array(generate_step(self.gen, jnp.asarray(z, jnp.float32)))[..., 0]

    def sample(self, n, seed):
        """n digits from n latents drawn with jax.random from `seed`."""
        return self.generate(jax.random.normal(jax.random.key(seed), (n, self.latent)))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (layout.py): {"dis": (value, grads), "gen": (value, grads)} for the
        objectives `noise` names, in training mode, nothing updated."""
        noise = layout.check_noise(noise, self.latent)
        real = jnp.asarray(batch[0], jnp.float32)
        self.gen.train()
        self.dis.train()
        objectives = {"dis": (dis_objective, self.dis, self.gen, real),
                      "gen": (gen_loss, self.gen, self.dis)}
        answers = {}
        for name, z in noise.items():
            loss, grads = value_and_grads(*objectives[name], jnp.asarray(z))
            answers[name] = (float(loss), self.canonical_grads(grads, name))
        return answers

    # ---- where the canonical arrays live (layout.py), for FlaxTrainer

    def groups(self):
        entries = layout.entries(self.model, self.latent)

        def paths(chosen):
            return [(e.layer, layout.ROLES["flax"][e.role]) for e in chosen]

        return {net: Group(module, paths(entries[net]), paths(layout.trainable(entries[net])),
                           optimizer)
                for net, module, optimizer in (("gen", self.gen, self.opt_gen),
                                               ("dis", self.dis, self.opt_dis))}

    def check_weights(self, weights):
        layout.check_weights(self.model, self.latent, weights)

    def pack_state(self, weights, moments, steps):
        return (layout.pack_state(self.model, self.latent, weights, moments, steps),
                layout.state_meta(ENGINE))

    def unpack_state(self, arrays, meta):
        return layout.unpack_state(self.model, self.latent, arrays, meta)
