"""The GAN in Flax NNX: two nnx.Modules, two nnx.Optimizers (optax's Adam), an @nnx.jit step per
batch, nnx.Rngs for the latents. Plumbing: customfit/trainers/flax_trainer.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from customfit.tasks.gan import layout
from customfit.trainers.flax_trainer import FlaxTrainer, RunningMeans, adam, frozen_statistics

ENGINE = "flax"


# --8<-- [start:model]
# Keras's Glorot-uniform kernels (Flax's default: LeCun-normal); networks answer in float32.
glorot = nnx.initializers.glorot_uniform()
dense = functools.partial(nnx.Linear, kernel_init=glorot)
conv = functools.partial(nnx.Conv, kernel_init=glorot)
# transpose_kernel=True: Keras's and PyTorch's transposed convolution, kernel (kh, kw, out, in).
conv_transpose = functools.partial(nnx.ConvTranspose, transpose_kernel=True, kernel_init=glorot)
halving = dict(strides=(2, 2), padding="SAME", use_bias=False)  # batch norm's beta is the bias


def batch_norm(channels, s, rngs):
    return nnx.BatchNorm(channels, momentum=s["bn_momentum"], epsilon=s["bn_epsilon"], rngs=rngs)


class LectureGenerator(nnx.Module):
    """Dense 256 -> 4x4x16; transposed convolutions 2x2 (8), 2x2 (4), 3x3 (1), ReLU then BN."""

    def __init__(self, latent, rngs: nnx.Rngs):
        s = layout.LECTURE
        self.dense = dense(latent, 4 * 4 * 16, rngs=rngs)
        self.norm0 = batch_norm(16, s, rngs)
        self.up1 = conv_transpose(16, 8, (2, 2), padding="VALID", rngs=rngs)
        self.norm1 = batch_norm(8, s, rngs)
        self.up2 = conv_transpose(8, 4, (2, 2), padding="VALID", rngs=rngs)
        self.norm2 = batch_norm(4, s, rngs)
        self.out = conv_transpose(4, 1, (3, 3), padding="VALID", rngs=rngs)

    def __call__(self, z):
        h = self.norm0(nnx.relu(self.dense(z)).reshape(-1, 4, 4, 16))
        h = self.norm1(nnx.relu(self.up1(h)))  # 5x5
        h = self.norm2(nnx.relu(self.up2(h)))  # 6x6
        return nnx.sigmoid(self.out(h)).astype(jnp.float32)  # 8x8


class LectureDiscriminator(nnx.Module):
    """3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self, rngs: nnx.Rngs):
        conv3x3 = functools.partial(conv, kernel_size=(3, 3), padding="VALID", rngs=rngs)
        self.conv1, self.conv2, self.conv3 = conv3x3(1, 4), conv3x3(4, 8), conv3x3(8, 16)
        self.logit = dense(2 * 2 * 16, 1, rngs=rngs)

    def __call__(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = nnx.relu(conv(x))
        return self.logit(x.reshape(x.shape[0], -1)).astype(jnp.float32)  # NHWC: Keras's order


class Generator(nnx.Module):
    """DCGAN-like: dense 4x4xW, BN, ReLU; 4x4/2 transposed conv W/2, BN, ReLU; 3x3 to 8x8x1."""

    def __init__(self, latent, rngs: nnx.Rngs):
        s = layout.DEFAULT
        w = self.width = s["width"]
        self.dense = dense(latent, 4 * 4 * w, rngs=rngs)
        self.norm0 = batch_norm(w, s, rngs)
        self.up = conv_transpose(w, w // 2, (4, 4), **halving, rngs=rngs)
        self.norm1 = batch_norm(w // 2, s, rngs)
        self.out = conv_transpose(w // 2, 1, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, z):
        h = nnx.relu(self.norm0(self.dense(z).reshape(-1, 4, 4, self.width)))
        h = nnx.relu(self.norm1(self.up(h)))
        return nnx.sigmoid(self.out(h)).astype(jnp.float32)


class Discriminator(nnx.Module):
    """DCGAN-like: 3x3 conv W/2, leaky ReLU; 4x4/2 conv W, BN, leaky ReLU; a dense logit."""

    def __init__(self, rngs: nnx.Rngs):
        s = layout.DEFAULT
        w, self.slope = s["width"], s["leaky_slope"]
        self.conv1 = conv(1, w // 2, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = conv(w // 2, w, (4, 4), **halving, rngs=rngs)
        self.norm = batch_norm(w, s, rngs)
        self.logit = dense(4 * 4 * w, 1, rngs=rngs)

    def __call__(self, x):
        h = nnx.leaky_relu(self.conv1(x), self.slope)
        h = nnx.leaky_relu(self.norm(self.conv2(h)), self.slope)
        return self.logit(h.reshape(h.shape[0], -1)).astype(jnp.float32)


NETS = dict(lecture=(LectureGenerator, LectureDiscriminator), default=(Generator, Discriminator))
# --8<-- [end:model]


# --8<-- [start:objective]
def fakes(gen, z):
    """The generator's digits for the discriminator's step: it is not trained there."""
    with frozen_statistics(gen):
        return jax.lax.stop_gradient(gen(z))


def dis_loss(dis, gen, real, z):
    """mean softplus(-D(x)) + mean softplus(D(G(z))): real digits' logits up, fakes' down."""
    return nnx.softplus(-dis(real)).mean() + nnx.softplus(dis(fakes(gen, z))).mean()


def gen_loss(gen, dis, z):
    """mean softplus(-D(G(z))): the non-saturating generator loss."""
    return nnx.softplus(-dis(gen(z))).mean()
    # --8<-- [end:objective]


# --8<-- [start:step]
@functools.partial(nnx.jit, static_argnames=("critic_steps", "latent"))
def train_step(gen, dis, opt_gen, opt_dis, rngs, real, critic_steps, latent):
    n = real.shape[0]
    dis_losses = []
    for _ in range(critic_steps):  # unrolled in the trace
        z = jax.random.normal(rngs.noise(), (n, latent))
        loss_d, grads = nnx.value_and_grad(dis_loss)(dis, gen, real, z)
        opt_dis.update(dis, grads)
        dis_losses.append(loss_d)
    z = jax.random.normal(rngs.noise(), (n, latent))
    with frozen_statistics(dis):
        loss_g, grads = nnx.value_and_grad(gen_loss)(gen, dis, z)  # grads: gen's nnx.Params
    opt_gen.update(gen, grads)
    return jnp.stack(dis_losses), loss_g


@functools.partial(nnx.jit, static_argnames=("latent",))
def eval_step(gen, dis, rngs, real, latent):
    z_dis, z_gen = (jax.random.normal(rngs.noise(), (real.shape[0], latent)) for _ in range(2))
    return {"dis_loss": dis_loss(dis, gen, real, z_dis), "gen_loss": gen_loss(gen, dis, z_gen)}
    # --8<-- [end:step]


generate_step = nnx.jit(lambda gen, z: gen(z))


class Trainer(FlaxTrainer):
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        super().__init__(devices)
        self.latent, self.critic_steps = latent, critic_steps
        Gen, Dis = NETS[model]
        self.gen, self.dis = self.initialized(lambda r: (Gen(latent, rngs=r), Dis(rngs=r)), seed)
        tx = adam(lr, layout.MODELS[model]["beta_1"], layout.BETA_2, layout.ADAM_EPSILON)
        optimizer = functools.partial(nnx.Optimizer, tx=tx, wrt=nnx.Param)
        self.opt_gen, self.opt_dis = optimizer(self.gen), optimizer(self.dis)
        nets = {"gen": (self.gen, self.opt_gen), "dis": (self.dis, self.opt_dis)}
        paths = layout.framework_paths(model, latent, ENGINE)
        self.keep(nets, paths, layout.state_codec(model, latent, ENGINE))

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        rngs = nnx.Rngs(noise=layout.noise_seed(shuffle_seed))  # a resumed epoch draws the same
        self.gen.train()
        self.dis.train()
        models = (self.gen, self.dis, self.opt_gen, self.opt_dis)
        means = RunningMeans(("dis_loss", "gen_loss"))
        for (real,) in self.epoch_batches((x,), batch_size, shuffle_seed):
            dis_losses, loss_g = train_step(*models, rngs, real, self.critic_steps, self.latent)
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
        step = functools.partial(eval_step, self.gen, self.dis, rngs, latent=self.latent)
        return self.held_out_means((x,), batch_size, ("dis_loss", "gen_loss"), step)

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        self.gen.eval()
        return np.array(generate_step(self.gen, jnp.asarray(z, jnp.float32)))[..., 0]

    def sample(self, n, seed):
        return self.generate(jax.random.normal(jax.random.key(seed), (n, self.latent)))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (layout.py): {objective: (value, grads)}, nothing updated."""
        noise = layout.check_noise(noise, self.latent)
        gen, dis, real = self.gen, self.dis, jnp.asarray(batch[0], jnp.float32)
        gen.train()
        dis.train()
        objectives = {"dis": (dis_loss, dis, gen, real), "gen": (gen_loss, gen, dis)}
        return {n: self.parity(*objectives[n], jnp.asarray(z), group=n) for n, z in noise.items()}
