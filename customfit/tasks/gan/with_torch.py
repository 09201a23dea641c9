"""The GAN in PyTorch, shaped like PyTorch's examples/dcgan: two channels-first nn.Modules, two
losses, per batch the discriminator's Adam steps, then the generator's. Unlike there, the network
not being trained keeps its batch-norm statistics (frozen_statistics): an update moves its own
network only (layout.py). The plumbing is TorchTrainer's: customfit/trainers/torch_trainer.py."""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from customfit import precision
from customfit.tasks.gan import layout
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.torch_trainer import ENGINE, TorchTrainer, adam_options, nchw
from customfit.trainers.torch_trainer import batch_norm_like_keras as batch_norm, init_like_keras
from customfit.trainers.torch_trainer import flatten_channels_last, frozen_statistics


# --8<-- [start:model]


class LectureGenerator(nn.Module):
    """The lecture's: dense 256, conv-transposes 8, 4, 1 (sigmoid); ReLU, then batch norm."""

    def __init__(self, latent):
        super().__init__()
        self.dense, self.norm0 = nn.Linear(latent, 4 * 4 * 16), batch_norm(16, layout.LECTURE)
        self.up1, self.norm1 = nn.ConvTranspose2d(16, 8, 2), batch_norm(8, layout.LECTURE)
        self.up2, self.norm2 = nn.ConvTranspose2d(8, 4, 2), batch_norm(4, layout.LECTURE)
        self.out = nn.ConvTranspose2d(4, 1, 3)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, z):
        h = F.relu(self.dense(z)).view(-1, 4, 4, 16)  # Keras reshapes to (H, W, C)
        h = self.norm0(h.permute(0, 3, 1, 2))  # channels first
        h = self.norm1(F.relu(self.up1(h)))  # 5x5
        h = self.norm2(F.relu(self.up2(h)))  # 6x6
        return torch.sigmoid(self.out(h))  # 8x8


class LectureDiscriminator(nn.Module):
    """The lecture's discriminator: 3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)  # 3x3 kernels
        self.conv3, self.logit = nn.Conv2d(8, 16, 3), nn.Linear(2 * 2 * 16, 1)

    @precision.autocast_forward
    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu(conv(x))
        return self.logit(flatten_channels_last(x))


class Generator(nn.Module):
    """DCGAN-like: dense 4x4xW, a 4x4 stride-2 conv-transpose to 8x8xW/2, one to 8x8x1."""

    def __init__(self, latent):
        super().__init__()
        s = layout.DEFAULT
        w = self.width = s["width"]
        self.dense, self.norm0 = nn.Linear(latent, 4 * 4 * w), batch_norm(w, s)
        # 4x4 kernel, stride 2, padding 1 (cropped from each side of the 10x10): Keras's "same".
        self.up = nn.ConvTranspose2d(w, w // 2, 4, 2, 1, bias=False)
        self.norm1 = batch_norm(w // 2, s)
        self.out = nn.ConvTranspose2d(w // 2, 1, kernel_size=3, padding=1)

    @precision.autocast_forward
    def forward(self, z):
        h = self.dense(z).view(-1, 4, 4, self.width).permute(0, 3, 1, 2)
        h = F.relu(self.norm0(h))
        h = F.relu(self.norm1(self.up(h)))
        return torch.sigmoid(self.out(h))


class Discriminator(nn.Module):
    """DCGAN-like: a 3x3 convolution (W/2), a 4x4 stride-2 one to 4x4xW, a dense logit."""

    def __init__(self):
        super().__init__()
        s = layout.DEFAULT
        w, self.slope = s["width"], s["leaky_slope"]
        self.conv1 = nn.Conv2d(1, w // 2, kernel_size=3, padding=1)
        self.conv2, self.norm = nn.Conv2d(w // 2, w, 4, 2, 1, bias=False), batch_norm(w, s)
        self.logit = nn.Linear(4 * 4 * w, 1)

    @precision.autocast_forward
    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), self.slope)
        h = F.leaky_relu(self.norm(self.conv2(h)), self.slope)
        return self.logit(flatten_channels_last(h))


NETWORKS = {"lecture": (LectureGenerator, LectureDiscriminator)}  # by --model
NETWORKS["default"] = (Generator, Discriminator)
# --8<-- [end:model]


# --8<-- [start:objective]
def dis_loss(gen, dis, real, z):
    """mean softplus(-D(x)) + mean softplus(D(G(z))): the discriminator learns to tell the real
    digits (logit up) from the generator's (logit down)."""
    with torch.no_grad(), frozen_statistics(gen):  # the generator is not trained here
        fake = gen(z)
    return F.softplus(-dis(real)).mean() + F.softplus(dis(fake)).mean()


def gen_loss(gen, dis, z):
    """mean softplus(-D(G(z))): the non-saturating generator loss."""
    with frozen_statistics(dis):
        return F.softplus(-dis(gen(z))).mean()


# --8<-- [end:objective]


class Trainer(TorchTrainer):
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        self.devices = devices
        torch.manual_seed(seed)
        Gen, Dis = NETWORKS[model]
        self.gen, self.dis = Gen(latent), Dis()
        self.gen.apply(init_like_keras)
        self.dis.apply(init_like_keras)
        self.trained = self.spread(self.gen, self.dis, forward_sync_buffers=False)
        options = adam_options(layout.MODELS[model]["beta_1"], layout.BETA_2, layout.ADAM_EPSILON)
        adam = partial(torch.optim.Adam, lr=lr, **options)
        self.opt_gen, self.opt_dis = adam(self.gen.parameters()), adam(self.dis.parameters())
        # Under float16 each optimizer's loss is scaled by its own GradScaler.
        self.scale_dis, self.scale_gen = precision.grad_scaler(), precision.grad_scaler()

    def _noise(self, n, generator):
        return torch.randn(n, self.latent, generator=generator)

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = self.epoch_batches([nchw(x)], batch_size, shuffle_seed)
        # The epoch's latents come from a generator seeded here: a resumed epoch draws the same.
        noise = torch.Generator().manual_seed(layout.noise_seed(shuffle_seed))
        gen, dis = (network.train() for network in self.trained)  # DDP's on several devices
        latents = partial(self.share_of, partial(self._noise, generator=noise))
        means = RunningMeans(("dis_loss", "gen_loss"))
        for (real,) in loader:
            n = len(real)
            for _ in range(self.critic_steps):
                self.opt_dis.zero_grad()
                loss_d = dis_loss(gen, dis, real, latents(n))
                self.backward_and_step(loss_d, self.opt_dis, self.scale_dis)
                means.add("dis_loss", loss_d.item(), n)
            self.opt_gen.zero_grad()
            loss_g = gen_loss(gen, dis, latents(n))
            # backward() also fills the discriminator's .grad: its next zero_grad clears it.
            self.backward_and_step(loss_g, self.opt_gen, self.scale_gen)
            means.add("gen_loss", loss_g.item(), n)
            on_batch(means.means())
        return self.mean_over_processes(means.means())

    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        noise = torch.Generator().manual_seed(layout.EVAL_SEED)
        gen, dis = self.gen.eval(), self.dis.eval()

        def figures(real):
            z_d, z_g = self._noise(len(real), noise), self._noise(len(real), noise)
            return {"dis_loss": dis_loss(gen, dis, real, z_d), "gen_loss": gen_loss(gen, dis, z_g)}

        return self.held_out_means([nchw(x)], batch_size, figures)

    def sample(self, n, seed):
        """n digits from n latents drawn by torch's generator seeded with `seed`."""
        return self.generate(self._noise(n, torch.Generator().manual_seed(seed)))

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        return self.infer(self.gen, z)[:, 0].copy()

    def networks(self):
        return {"gen": self.gen, "dis": self.dis}

    def check_weights(self, weights):
        layout.check_weights(self.model, self.latent, weights)

    def objective_and_grads(self, batch, noise=None):
        nets = (self.gen, self.dis)
        losses = {"dis": partial(dis_loss, *nets, nchw(batch[0])), "gen": partial(gen_loss, *nets)}
        return self.losses_and_gradients(losses, layout.check_noise(noise, self.latent))

    def state(self):
        moments, steps = self.adam_states({"gen": self.opt_gen, "dis": self.opt_dis})
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(ENGINE)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        self.load_adam_states({"gen": self.opt_gen, "dis": self.opt_dis}, moments, steps)
