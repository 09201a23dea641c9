"""The GAN in PyTorch, in the shape of PyTorch's examples/dcgan: two nn.Modules, two losses, two
Adam optimizers, and per batch the discriminator's steps, then the generator's, each optimizer
doing zero_grad / backward / step for its own network.

Idiomatic here: the networks work channels-first (the data is turned NCHW once, at the door),
train()/eval() switch batch norm, and `torch.no_grad()` stands for "the generator is not being
trained" in the discriminator's loss. Not in examples/dcgan: the network that is not being trained
runs in training mode without moving its batch-norm running statistics (frozen_statistics),
because in this family an update moves its own network only (layout.py). The plumbing (canonical
weights, Adam state, the parity hook's gradients, several processes, float16) is TorchTrainer's:
customfit/trainers/torch_trainer.py.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from customfit import precision
from customfit.tasks.gan import layout
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.torch_trainer import (ENGINE, TorchTrainer, frozen_statistics,
                                              init_like_keras, tensor)


# --8<-- [start:model]
def batch_norm(channels, settings):
    # PyTorch's momentum is the weight of the new batch: Keras's momentum m is 1 - m here.
    return nn.BatchNorm2d(channels, momentum=1.0 - settings["bn_momentum"],
                          eps=settings["bn_epsilon"])


def channels_first(h):
    return h.permute(0, 3, 1, 2)


def flatten_channels_last(h):
    # Flatten in (H, W, C) order, as Keras does, so that the dense layer after it takes its
    # inputs in the same order on every engine.
    return h.permute(0, 2, 3, 1).flatten(1)


class LectureGenerator(nn.Module):
    """The lecture's generator: dense 256 -> 4x4x16, batch norm, transposed convolutions
    2x2 (8), 2x2 (4), 3x3 (1, sigmoid), each hidden one followed by ReLU then batch norm."""

    def __init__(self, latent):
        super().__init__()
        s = layout.LECTURE
        self.dense = nn.Linear(latent, 4 * 4 * 16)
        self.norm0 = batch_norm(16, s)
        self.up1 = nn.ConvTranspose2d(16, 8, kernel_size=2)
        self.norm1 = batch_norm(8, s)
        self.up2 = nn.ConvTranspose2d(8, 4, kernel_size=2)
        self.norm2 = batch_norm(4, s)
        self.out = nn.ConvTranspose2d(4, 1, kernel_size=3)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, z):
        h = F.relu(self.dense(z))
        h = self.norm0(channels_first(h.view(-1, 4, 4, 16)))  # Keras reshapes to (H, W, C)
        h = self.norm1(F.relu(self.up1(h)))                    # 5x5
        h = self.norm2(F.relu(self.up2(h)))                    # 6x6
        return torch.sigmoid(self.out(h))                      # 8x8


class LectureDiscriminator(nn.Module):
    """The lecture's discriminator: 3x3 convolutions 4, 8, 16 (ReLU), a dense logit."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
        self.conv2 = nn.Conv2d(4, 8, kernel_size=3)
        self.conv3 = nn.Conv2d(8, 16, kernel_size=3)
        self.logit = nn.Linear(2 * 2 * 16, 1)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        return self.logit(flatten_channels_last(h))


class Generator(nn.Module):
    """DCGAN-like: dense -> 4x4xW, batch norm, ReLU; a 4x4 stride-2 transposed convolution to
    8x8xW/2, batch norm, ReLU; a 3x3 transposed convolution to 8x8x1, sigmoid."""

    def __init__(self, latent):
        super().__init__()
        s = layout.DEFAULT
        w = self.width = s["width"]
        self.dense = nn.Linear(latent, 4 * 4 * w)
        self.norm0 = batch_norm(w, s)
        # padding=1 crops one pixel from each side of the 10x10 full output: Keras's "same".
        self.up = nn.ConvTranspose2d(w, w // 2, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm1 = batch_norm(w // 2, s)
        self.out = nn.ConvTranspose2d(w // 2, 1, kernel_size=3, padding=1)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, z):
        h = channels_first(self.dense(z).view(-1, 4, 4, self.width))
        h = F.relu(self.norm0(h))
        h = F.relu(self.norm1(self.up(h)))
        return torch.sigmoid(self.out(h))


class Discriminator(nn.Module):
    """DCGAN-like: a 3x3 convolution (W/2), leaky ReLU; a 4x4 stride-2 convolution to 4x4xW,
    batch norm, leaky ReLU; a dense logit."""

    def __init__(self):
        super().__init__()
        s = layout.DEFAULT
        w, self.slope = s["width"], s["leaky_slope"]
        self.conv1 = nn.Conv2d(1, w // 2, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(w // 2, w, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm = batch_norm(w, s)
        self.logit = nn.Linear(4 * 4 * w, 1)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), self.slope)
        h = F.leaky_relu(self.norm(self.conv2(h)), self.slope)
        return self.logit(flatten_channels_last(h))


NETWORKS = {"lecture": (LectureGenerator, LectureDiscriminator),
            "default": (Generator, Discriminator)}
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


def images(x):
    """NHWC digits (every engine's data) as the NCHW tensor nn.Conv2d takes."""
    return tensor(x).permute(0, 3, 1, 2).contiguous()


class Trainer(TorchTrainer):
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        self.entries = layout.entries(model, latent)
        settings = layout.MODELS[model]
        torch.manual_seed(seed)
        Gen, Dis = NETWORKS[model]
        self.gen, self.dis = Gen(latent), Dis()
        self.gen.apply(init_like_keras)
        self.dis.apply(init_like_keras)
        # On several devices the updates call the DistributedDataParallel wrappers (trained), the
        # rest the networks. Batch norm stays per process (SyncBatchNorm runs on GPUs only), its
        # running statistics synced at the start only (forward_sync_buffers=False).
        self.devices = devices
        self.trained_gen, self.trained_dis = (self.spread(network, forward_sync_buffers=False)
                                              for network in (self.gen, self.dis))
        betas = (settings["beta_1"], layout.BETA_2)
        self.opt_gen = torch.optim.Adam(self.gen.parameters(), lr=lr, betas=betas,
                                        eps=layout.ADAM_EPSILON)
        self.opt_dis = torch.optim.Adam(self.dis.parameters(), lr=lr, betas=betas,
                                        eps=layout.ADAM_EPSILON)
        # Under float16 each optimizer's loss is scaled by its own GradScaler.
        self.scale_dis, self.scale_gen = precision.grad_scaler(), precision.grad_scaler()

    def _noise(self, n, generator):
        return torch.randn(n, self.latent, generator=generator)

    def _latents(self, n, noise):  # this process's share of a batch's latents
        return self.share_of(functools.partial(self._noise, generator=noise), n)

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = self.epoch_batches([images(x)], batch_size, shuffle_seed)
        # The epoch's latents come from a generator seeded here: a resumed epoch draws the same.
        noise = torch.Generator().manual_seed(layout.noise_seed(shuffle_seed))
        self.gen.train()
        self.dis.train()
        gen, dis = self.trained_gen, self.trained_dis
        means = RunningMeans(("dis_loss", "gen_loss"))
        for (real,) in loader:
            n = len(real)
            for _ in range(self.critic_steps):
                self.opt_dis.zero_grad()
                loss_d = dis_loss(gen, dis, real, self._latents(n, noise))
                self.backward_and_step(loss_d, self.opt_dis, self.scale_dis)
                means.add("dis_loss", loss_d.item(), n)
            self.opt_gen.zero_grad()
            loss_g = gen_loss(gen, dis, self._latents(n, noise))
            # backward() also fills the discriminator's .grad: its next zero_grad clears it.
            self.backward_and_step(loss_g, self.opt_gen, self.scale_gen)
            means.add("gen_loss", loss_g.item(), n)
            on_batch(means.means())
        return self.mean_over_processes(means.means())
    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        noise = torch.Generator().manual_seed(layout.EVAL_SEED)
        self.gen.eval()
        self.dis.eval()
        return self.held_out_means([images(x)], batch_size, lambda real: {
            "dis_loss": dis_loss(self.gen, self.dis, real, self._noise(len(real), noise)),
            "gen_loss": gen_loss(self.gen, self.dis, self._noise(len(real), noise))})

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        self.gen.eval()
        with torch.no_grad():
            return self.gen(tensor(z))[:, 0].numpy().copy()

    def sample(self, n, seed):
        """n digits from n latents drawn by torch's generator seeded with `seed`."""
        return self.generate(self._noise(n, torch.Generator().manual_seed(seed)).numpy())

    # ---- for TorchTrainer: every array by its entry in layout.py; the parity hook; state

    def weight_tensors(self, chosen=list):
        return {net: [layout.find(network, e, "torch") for e in chosen(self.entries[net])]
                for net, network in self.networks().items()}

    def networks(self):
        return {"gen": self.gen, "dis": self.dis}

    def trainable_tensors(self):
        return self.weight_tensors(layout.trainable)

    def check_weights(self, weights):
        layout.check_weights(self.model, self.latent, weights)

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (layout.py): {"dis": (value, grads), "gen": (value, grads)} for the
        objectives `noise` names, each network in training mode and frozen, nothing updated."""
        real = images(batch[0])
        losses = {"dis": functools.partial(dis_loss, self.gen, self.dis, real),
                  "gen": functools.partial(gen_loss, self.gen, self.dis)}
        return {name: self.loss_and_gradients(
                    functools.partial(losses[name], torch.from_numpy(z)), self.networks()[name],
                    self.trainable_tensors()[name], frozen=(self.gen, self.dis))
                for name, z in layout.check_noise(noise, self.latent).items()}

    def state(self):
        moments, steps = self.adam_states({"gen": self.opt_gen, "dis": self.opt_dis})
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(ENGINE)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        self.load_adam_states({"gen": self.opt_gen, "dis": self.opt_dis}, moments, steps)
