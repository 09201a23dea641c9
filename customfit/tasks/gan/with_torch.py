"""The GAN in PyTorch: two nn.Modules, two Adam optimizers, autograd and a DataLoader, in the
shape of PyTorch's examples/dcgan: per batch, the discriminator's steps, then the generator's.

Idiomatic here: the networks work channels-first (the data is turned NCHW once, at the door),
train()/eval() switch batch norm, `torch.no_grad()` stands for "the generator is not being
trained" in the discriminator's step, and each optimizer does zero_grad/backward/step for its own
network. What is not in examples/dcgan: the network that is not being trained runs in training
mode without moving its batch-norm running statistics (frozen_statistics), because in this family
an update moves its own network only (customfit/tasks/gan/layout.py).
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from customfit import precision
from customfit.tasks.gan import layout

ENGINE = "torch"


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


def init_like_keras(module):
    """Glorot-uniform kernels and zero biases, as Keras starts (PyTorch's own default is
    Kaiming-uniform): every engine then starts from the same distribution."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@contextlib.contextmanager
def frozen_statistics(network):
    """Run `network` in training mode (batch statistics) without moving its running statistics:
    inside, its batch-norm layers update copies of them, which are dropped on the way out. (The
    originals are not written to at all, so autograd, which keeps them for the backward pass,
    sees them unchanged.)"""
    kept = [(module, name, buffer) for module in network.modules()
            for name, buffer in module.named_buffers(recurse=False)]
    for module, name, buffer in kept:
        setattr(module, name, buffer.clone())
    try:
        yield network
    finally:
        for module, name, buffer in kept:
            setattr(module, name, buffer)


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


def _distributed(devices, *networks):
    """The networks wrapped in DistributedDataParallel. Batch norm stays per process: torch's
    SyncBatchNorm runs on GPUs only, and this engine runs on the CPU, so each process normalizes
    with its own share's statistics (DDP's default). The running statistics are synced once, at
    the start, not from rank 0 before every forward pass (forward_sync_buffers=False): then they
    are each process's."""
    from customfit.parallel import process_group

    process_group.check_world(devices)
    return [torch.nn.parallel.DistributedDataParallel(n, forward_sync_buffers=False)
            for n in networks]



def _images(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()


class Trainer:
    def __init__(self, model, latent, critic_steps, lr, seed, devices=1):
        self.model, self.latent, self.critic_steps = model, latent, critic_steps
        self.entries = layout.entries(model, latent)
        settings = layout.MODELS[model]
        torch.manual_seed(seed)
        Gen, Dis = NETWORKS[model]
        self.gen, self.dis = Gen(latent), Dis()
        self.gen.apply(init_like_keras)
        self.dis.apply(init_like_keras)
        # On several devices: one process each (customfit/parallel/process_group.py), both
        # networks wrapped in DistributedDataParallel, which averages their gradients during
        # backward(); the updates below call the wrappers (trained), the rest the networks.
        self.devices = devices
        self.trained_gen, self.trained_dis = ((self.gen, self.dis) if devices == 1
                                              else _distributed(devices, self.gen, self.dis))
        betas = (settings["beta_1"], layout.BETA_2)
        self.opt_gen = torch.optim.Adam(self.gen.parameters(), lr=lr, betas=betas,
                                        eps=layout.ADAM_EPSILON)
        self.opt_dis = torch.optim.Adam(self.dis.parameters(), lr=lr, betas=betas,
                                        eps=layout.ADAM_EPSILON)
        # Under float16, each optimizer's loss scaled by its own GradScaler (each skips its own
        # overflowing steps); otherwise they pass everything through (customfit/precision.py).
        self.scale_dis, self.scale_gen = precision.grad_scaler(), precision.grad_scaler()

    def _noise(self, n, generator):
        return torch.randn(n, self.latent, generator=generator)

    def _loader(self, images, batch_size, shuffle_seed):
        dataset = TensorDataset(images)
        from customfit.parallel import process_group

        return process_group.epoch_loader(dataset, batch_size, shuffle_seed, self.devices)

    def _latents(self, n, noise):
        """n latents for this process's share of a batch: each process draws the global
        batch's, as one process would, and keeps every devices-th row from its rank."""
        if self.devices == 1:
            return self._noise(n, noise)
        from customfit.parallel import process_group

        return self._noise(n * self.devices, noise)[process_group.rank()::self.devices]

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = self._loader(_images(x), batch_size, shuffle_seed)
        # The epoch's latents come from a generator seeded here: a resumed epoch draws the same.
        noise = torch.Generator().manual_seed(layout.noise_seed(shuffle_seed))
        self.gen.train()
        self.dis.train()
        gen, dis = self.trained_gen, self.trained_dis
        tally = Means(("dis_loss", "gen_loss"))
        for (real,) in loader:
            n = len(real)
            for _ in range(self.critic_steps):
                self.opt_dis.zero_grad()
                loss_d = dis_loss(gen, dis, real, self._latents(n, noise))
                self.scale_dis.scale(loss_d).backward()
                self.scale_dis.step(self.opt_dis)
                self.scale_dis.update()
                tally.add("dis_loss", loss_d.item(), n)
            self.opt_gen.zero_grad()
            loss_g = gen_loss(gen, dis, self._latents(n, noise))
            # backward() also fills the discriminator's .grad: its next zero_grad clears it.
            self.scale_gen.scale(loss_g).backward()
            self.scale_gen.step(self.opt_gen)
            self.scale_gen.update()
            tally.add("gen_loss", loss_g.item(), n)
            on_batch(tally.means())
        if self.devices == 1:
            return tally.means()
        from customfit.parallel import process_group

        return process_group.mean_over_processes(tally.means())

    def evaluate(self, x, batch_size):
        noise = torch.Generator().manual_seed(layout.EVAL_SEED)
        self.gen.eval()
        self.dis.eval()
        tally = Means(("dis_loss", "gen_loss"))
        with torch.no_grad():
            for (real,) in DataLoader(TensorDataset(_images(x)), batch_size=batch_size):
                n = len(real)
                tally.add("dis_loss", dis_loss(self.gen, self.dis, real, self._noise(n, noise)), n)
                tally.add("gen_loss", gen_loss(self.gen, self.dis, self._noise(n, noise)), n)
        return tally.means()

    def generate(self, z):
        """The generator in inference mode on given latents: (n, 8, 8) in [0, 1]."""
        self.gen.eval()
        with torch.no_grad():
            images = self.gen(torch.from_numpy(np.asarray(z, dtype=np.float32)))
        return images[:, 0].numpy().copy()

    def sample(self, n, seed):
        """n digits from n latents drawn by torch's generator seeded with `seed`."""
        z = self._noise(n, torch.Generator().manual_seed(seed))
        return self.generate(z.numpy())

    # ---- weights, the parity hook, state: every array in the canonical layout (layout.py)

    def _networks(self):
        return {"gen": self.gen, "dis": self.dis}

    def get_weights(self):
        return {net: [layout.from_torch(e, layout.find(module, e, "torch").detach().numpy())
                      for e in self.entries[net]]
                for net, module in self._networks().items()}

    def set_weights(self, weights):
        layout.check_weights(self.model, self.latent, weights)
        with torch.no_grad():
            for net, module in self._networks().items():
                for e, value in zip(self.entries[net], weights[net]):
                    target = layout.find(module, e, "torch")
                    target.copy_(torch.from_numpy(layout.to_torch(e, value)))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook (see layout.py): {"dis": (value, grads), "gen": (value, grads)} for
        the objectives `noise` names, in training mode, nothing updated."""
        (x,) = batch
        noise = layout.check_noise(noise, self.latent)
        real = _images(x)
        self.gen.train()
        self.dis.train()
        answers = {}
        for name, z in noise.items():
            own = self._networks()[name]
            own.zero_grad(set_to_none=True)
            with frozen_statistics(self.gen), frozen_statistics(self.dis):
                z = torch.from_numpy(z)
                loss = (dis_loss(self.gen, self.dis, real, z) if name == "dis"
                        else gen_loss(self.gen, self.dis, z))
                loss.backward()
            grads = [layout.from_torch(e, layout.find(own, e, "torch").grad.numpy())
                     for e in layout.trainable(self.entries[name])]
            answers[name] = (loss.item(), grads)
        self.gen.zero_grad(set_to_none=True)
        self.dis.zero_grad(set_to_none=True)
        return answers

    def _optimizers(self):
        return {"gen": self.opt_gen, "dis": self.opt_dis}

    def state(self):
        moments, steps = {}, {}
        for net, module in self._networks().items():
            optimizer = self._optimizers()[net]
            first, second, step = [], [], 0
            for e in layout.trainable(self.entries[net]):
                parameter = layout.find(module, e, "torch")
                slots = optimizer.state.get(parameter, {})
                # Before its first step torch has no Adam state: its moments are zeros then.
                first.append(layout.from_torch(e, slots["exp_avg"].numpy()) if slots
                             else np.zeros(e.shape, np.float32))
                second.append(layout.from_torch(e, slots["exp_avg_sq"].numpy()) if slots
                              else np.zeros(e.shape, np.float32))
                step = int(slots["step"].item()) if slots else 0
            moments[net], steps[net] = (first, second), step
        arrays = layout.pack_state(self.model, self.latent, self.get_weights(), moments, steps)
        return arrays, layout.state_meta(ENGINE)

    def load_state(self, arrays, meta):
        weights, moments, steps = layout.unpack_state(self.model, self.latent, arrays, meta)
        self.set_weights(weights)
        for net, module in self._networks().items():
            optimizer = self._optimizers()[net]
            index = {id(p): i for i, p in enumerate(optimizer.param_groups[0]["params"])}
            saved = optimizer.state_dict()
            saved["state"] = {}
            if steps[net]:
                for e, m, v in zip(layout.trainable(self.entries[net]), *moments[net]):
                    i = index[id(layout.find(module, e, "torch"))]
                    saved["state"][i] = {"step": torch.tensor(float(steps[net])),
                                         "exp_avg": torch.from_numpy(layout.to_torch(e, m)),
                                         "exp_avg_sq": torch.from_numpy(layout.to_torch(e, v))}
            optimizer.load_state_dict(saved)
