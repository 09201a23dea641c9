"""The VAE in PyTorch, the way PyTorch's examples/vae writes one: an nn.Module with encode(),
reparameterize() and decode(), a loss function of (x, x_hat, mu, logvar), and a loop of
zero_grad / backward / step over a DataLoader.

Unlike examples/vae, the noise comes from a torch.Generator seeded at the start of each epoch
(from the loop's shuffle seed), not from the global one: then an epoch's noise is a function of
the run's seed and the epoch alone, and a resumed run draws what an uninterrupted one drew.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from customfit import precision
from customfit.tasks.vae import layout

ENGINE = "torch"


def _tensor(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


class MLPEncoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = nn.Linear(layout.PIXELS, h1)
        self.hidden2 = nn.Linear(h1, h2)
        self.mu = nn.Linear(h2, latent)
        self.logvar = nn.Linear(h2, latent)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x):
        h = F.relu(self.hidden1(x.flatten(1)))  # NHWC flattened (H, W, C): Keras's order
        h = F.relu(self.hidden2(h))
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1 = nn.Linear(latent, h2)
        self.hidden2 = nn.Linear(h2, h1)
        self.out = nn.Linear(h1, layout.PIXELS)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, z):
        h = F.relu(self.hidden1(z))
        h = F.relu(self.hidden2(h))
        return torch.sigmoid(self.out(h)).view(-1, *layout.IMAGE)


class ConvEncoder(nn.Module):
    """The lecture's encoder: three 3x3 valid convolutions (4, 8, 16), then mu and log-variance."""

    def __init__(self, latent):
        super().__init__()
        f1, f2, f3 = layout.CONV_FILTERS
        self.conv1 = nn.Conv2d(1, f1, 3)
        self.conv2 = nn.Conv2d(f1, f2, 3)
        self.conv3 = nn.Conv2d(f2, f3, 3)
        self.mu = nn.Linear(2 * 2 * f3, latent)
        self.logvar = nn.Linear(2 * 2 * f3, latent)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x):
        h = x.permute(0, 3, 1, 2)  # the data is NHWC, nn.Conv2d wants NCHW
        h = F.relu(self.conv1(h))
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        # Flatten in (H, W, C) order, as Keras does: the dense heads' weights then map 1:1.
        h = h.permute(0, 2, 3, 1).flatten(1)
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    """The lecture's decoder: dense 256, reshape 4x4x16, conv-transposes 8 (2x2), 4 (2x2), 1 (3x3)."""

    def __init__(self, latent):
        super().__init__()
        spec = layout.CONV_DECODER
        channels = spec["reshape"][-1]
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.dense = nn.Linear(latent, spec["dense"])
        self.deconv1 = nn.ConvTranspose2d(channels, f1, k1)
        self.deconv2 = nn.ConvTranspose2d(f1, f2, k2)
        self.deconv3 = nn.ConvTranspose2d(f2, f3, k3)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, z):
        h = F.relu(self.dense(z))
        h = h.view(-1, *layout.CONV_DECODER["reshape"]).permute(0, 3, 1, 2)  # Keras's Reshape is HWC
        h = F.leaky_relu(self.deconv1(h), layout.LEAKY_SLOPE)  # torch's default slope is 0.01
        h = F.leaky_relu(self.deconv2(h), layout.LEAKY_SLOPE)
        return torch.sigmoid(self.deconv3(h)).permute(0, 2, 3, 1)


class VAE(nn.Module):
    def __init__(self, network, latent):
        super().__init__()
        self.latent = latent
        self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent)
        self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent)

    def reparameterize(self, mu, logvar, eps):
        return mu + eps * torch.exp(0.5 * logvar)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x, eps=None, generator=None):
        """(x_hat, mu, logvar); the encoder runs once. eps: given (parity), else drawn."""
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator)
        return self.decoder(self.reparameterize(mu, logvar, eps)), mu, logvar


def loss_function(x, x_hat, mu, logvar, temperature, objective):
    """The figures of one batch (see layout's docstring): loss = kl + reconstruction, and the
    negative ELBO per image of the Gaussian decoder of variance T, constant included."""
    kl_per_image = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    squares_per_image = (x - x_hat).pow(2).flatten(1).sum(dim=1)
    if objective == "elbo":
        kl = kl_per_image.mean()
        reconstruction = squares_per_image.mean() / (2.0 * temperature)
    else:  # the lecture's: means over the batch and the dimensions alike
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean()
        reconstruction = (x - x_hat).pow(2).mean() / (2.0 * temperature)
    neg_elbo = ((kl_per_image + squares_per_image / (2.0 * temperature)).mean()
                + layout.gaussian_constant(temperature))
    return {"loss": kl + reconstruction, "kl": kl, "reconstruction": reconstruction,
            "neg_elbo": neg_elbo}


class Trainer:
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        self.network, self.objective, self.latent = network, objective, latent
        self.temperature, self.seed = float(temperature), seed
        self._shapes = layout.canonical_shapes(network, latent)
        # nn.Linear and the convolutions initialise themselves from torch's global generator.
        torch.manual_seed(seed)
        self.model = VAE(network, latent)
        # On several devices: one process each (customfit/parallel/process_group.py), the model
        # wrapped in DistributedDataParallel, which averages the gradients during backward().
        self.devices = devices
        self.trained = self.model if devices == 1 else _distributed(self.model, devices)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr,
                                          betas=(layout.ADAM["beta_1"], layout.ADAM["beta_2"]),
                                          eps=layout.ADAM["epsilon"])
        self.scaler = precision.grad_scaler()

    def _figures(self, x, x_hat, mu, logvar):
        return loss_function(x, x_hat, mu, logvar, self.temperature, self.objective)

    def _loader(self, dataset, batch_size, shuffle_seed):
        from customfit.parallel import process_group

        return process_group.epoch_loader(dataset, batch_size, shuffle_seed, self.devices)

    def _noise(self, n, generator):
        """The reparameterisation noise of n images: on several processes each draws the
        global batch's, as one process would, and keeps every devices-th row from its rank."""
        if self.devices == 1:
            return torch.randn((n, self.latent), generator=generator)
        from customfit.parallel import process_group

        draws = torch.randn((n * self.devices, self.latent), generator=generator)
        return draws[process_group.rank()::self.devices]

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = self._loader(TensorDataset(_tensor(x)), batch_size, shuffle_seed)
        noise = torch.Generator().manual_seed(shuffle_seed)
        self.model.train()
        means = layout.RunningMeans()
        for (x_batch,) in loader:
            self.optimizer.zero_grad()
            x_hat, mu, logvar = self.trained(x_batch, eps=self._noise(len(x_batch), noise))
            figures = self._figures(x_batch, x_hat, mu, logvar)
            # Under float16 the scaler scales the loss and skips a step whose gradients overflow;
            # otherwise it passes both through (customfit/precision.py).
            self.scaler.scale(figures["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            means.add({k: v.item() for k, v in figures.items()}, len(x_batch))
            on_batch(means.means())
        if self.devices == 1:
            return means.means()
        from customfit.parallel import process_group

        return process_group.mean_over_processes(means.means())

    def evaluate(self, x, batch_size):
        # The held-out figures draw their noise from the run's seed, the same at every call.
        noise = torch.Generator().manual_seed(self.seed)
        self.model.eval()
        means = layout.RunningMeans()
        with torch.no_grad():
            for (x_batch,) in DataLoader(TensorDataset(_tensor(x)), batch_size=batch_size):
                x_hat, mu, logvar = self.model(x_batch, generator=noise)
                figures = self._figures(x_batch, x_hat, mu, logvar)
                means.add({k: v.item() for k, v in figures.items()}, len(x_batch))
        return means.means()

    # ---- what the spec asks after training

    def encode(self, x):
        self.model.eval()
        with torch.no_grad():
            mu, logvar = self.model.encoder(_tensor(x))
        return mu.numpy().copy(), logvar.numpy().copy()

    def decode(self, z):
        self.model.eval()
        with torch.no_grad():
            return self.model.decoder(_tensor(z)).numpy()[..., 0].copy()

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z drawn by a torch.Generator seeded with seed."""
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed))
        return self.decode((scale * z).numpy())

    # ---- weights, the parity hook, state

    def _params(self):
        return {"encoder": list(self.model.encoder.parameters()),
                "decoder": list(self.model.decoder.parameters())}

    def get_weights(self):
        return {net: [layout.canonical_from_torch(p.detach().numpy()) for p in params]
                for net, params in self._params().items()}

    def set_weights(self, weights):
        layout.check_weights(self._shapes, weights)
        with torch.no_grad():
            for net, params in self._params().items():
                for parameter, value in zip(params, weights[net]):
                    parameter.copy_(torch.from_numpy(layout.torch_from_canonical(value)))

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,) with the
        reparameterisation noise `noise` (B, latent) given; no update."""
        (x,) = batch
        self.model.train()
        self.model.zero_grad()
        x = _tensor(x)
        x_hat, mu, logvar = self.model(x, eps=_tensor(noise))
        loss = self._figures(x, x_hat, mu, logvar)["loss"]
        loss.backward()
        grads = {net: [layout.canonical_from_torch(p.grad.numpy()) for p in params]
                 for net, params in self._params().items()}
        self.model.zero_grad()  # leave nothing behind for the next optimizer step to see
        return loss.item(), grads

    def state(self):
        slots = {"exp_avg": {}, "exp_avg_sq": {}}
        step = 0
        for net, params in self._params().items():
            for key in slots:
                slots[key][net] = []
            for p in params:
                adam = self.optimizer.state.get(p, {})
                # Before the first step torch has no Adam state yet: its moments are zeros then.
                for key in slots:
                    slots[key][net].append(layout.canonical_from_torch(
                        adam[key].numpy() if adam else np.zeros(p.shape, np.float32)))
                if adam:
                    step = int(adam["step"].item())
        arrays = layout.pack_state(self.get_weights(), slots["exp_avg"], slots["exp_avg_sq"], step)
        return arrays, layout.state_meta(ENGINE, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self._shapes)
        self.set_weights(weights)
        saved = self.optimizer.state_dict()
        ordered = [(m, v) for net in layout.NETS for m, v in zip(first[net], second[net])]
        saved["state"] = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)),
                "exp_avg": torch.from_numpy(layout.torch_from_canonical(m)),
                "exp_avg_sq": torch.from_numpy(layout.torch_from_canonical(v))}
            for i, (m, v) in enumerate(ordered)}
        self.optimizer.load_state_dict(saved)


def _distributed(model, devices):
    from customfit.parallel import process_group

    process_group.check_world(devices)
    return torch.nn.parallel.DistributedDataParallel(model)

