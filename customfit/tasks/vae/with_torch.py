"""The VAE in PyTorch, as PyTorch's examples/vae writes one: an encoder and a decoder, the
reparameterization, a loss function of (x, x_hat, mu, logvar), zero_grad / backward / step. Unlike
there, the noise comes from a torch.Generator seeded per epoch, not the global one: a resumed run
draws what an uninterrupted one drew. The plumbing is TorchTrainer's (trainers/torch_trainer.py)."""

import torch
import torch.nn.functional as F
from torch import nn

from customfit import precision
from customfit.tasks.vae import layout
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.torch_trainer import ENGINE, TorchTrainer, adam_options, tensor
from customfit.trainers.torch_trainer import flatten_channels_last


# --8<-- [start:model]
class MLPEncoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1, self.hidden2 = nn.Linear(layout.PIXELS, h1), nn.Linear(h1, h2)
        self.mu, self.logvar = nn.Linear(h2, latent), nn.Linear(h2, latent)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x):
        h = F.relu(self.hidden1(x.flatten(1)))  # NHWC flattened (H, W, C): Keras's order
        h = F.relu(self.hidden2(h))
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        h1, h2 = layout.MLP_HIDDEN
        self.hidden1, self.hidden2 = nn.Linear(latent, h2), nn.Linear(h2, h1)
        self.out = nn.Linear(h1, layout.PIXELS)

    @precision.autocast_forward
    def forward(self, z):
        h = F.relu(self.hidden1(z))
        h = F.relu(self.hidden2(h))
        return torch.sigmoid(self.out(h)).view(-1, *layout.IMAGE)


class ConvEncoder(nn.Module):
    """The lecture's encoder: three 3x3 valid convolutions (4, 8, 16), then mu and log-variance."""

    def __init__(self, latent):
        super().__init__()
        f1, f2, f3 = layout.CONV_FILTERS
        self.conv1, self.conv2 = nn.Conv2d(1, f1, 3), nn.Conv2d(f1, f2, 3)
        self.conv3 = nn.Conv2d(f2, f3, 3)
        self.mu, self.logvar = nn.Linear(2 * 2 * f3, latent), nn.Linear(2 * 2 * f3, latent)

    @precision.autocast_forward
    def forward(self, x):
        h = x.permute(0, 3, 1, 2)  # the data is NHWC, nn.Conv2d wants NCHW
        for conv in (self.conv1, self.conv2, self.conv3):
            h = F.relu(conv(h))
        h = flatten_channels_last(h)  # then the dense heads' weights map 1:1 to Keras's
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    """The lecture's decoder: dense 256, reshape 4x4x16, conv-transposes 8 (2x2), 4, 1 (3x3)."""

    def __init__(self, latent):
        super().__init__()
        spec = layout.CONV_DECODER
        (f1, f2, f3), (k1, k2, k3) = spec["filters"], spec["kernels"]
        self.dense = nn.Linear(latent, spec["dense"])
        self.deconv1 = nn.ConvTranspose2d(spec["reshape"][-1], f1, k1)
        self.deconv2, self.deconv3 = nn.ConvTranspose2d(f1, f2, k2), nn.ConvTranspose2d(f2, f3, k3)

    @precision.autocast_forward
    def forward(self, z):
        h = F.relu(self.dense(z))
        h = h.view(-1, *layout.CONV_DECODER["reshape"]).permute(0, 3, 1, 2)  # Keras's is HWC
        h = F.leaky_relu(self.deconv1(h), layout.LEAKY_SLOPE)  # torch's default slope is 0.01
        h = F.leaky_relu(self.deconv2(h), layout.LEAKY_SLOPE)
        return torch.sigmoid(self.deconv3(h)).permute(0, 2, 3, 1)


class VAE(nn.Module):
    def __init__(self, network, latent):
        super().__init__()
        self.encoder = (MLPEncoder if network == "mlp" else ConvEncoder)(latent)
        self.decoder = (MLPDecoder if network == "mlp" else ConvDecoder)(latent)

    def reparameterize(self, mu, logvar, eps):
        return mu + eps * torch.exp(0.5 * logvar)

    @precision.autocast_forward
    def forward(self, x, eps=None, generator=None):
        """(x_hat, mu, logvar); the encoder runs once. eps: given (parity), else drawn."""
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator)
        return self.decoder(self.reparameterize(mu, logvar, eps)), mu, logvar


# --8<-- [end:model]


# --8<-- [start:objective]
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
    neg_elbo = (
        kl_per_image + squares_per_image / (2.0 * temperature)
    ).mean() + layout.gaussian_constant(temperature)
    loss = kl + reconstruction
    return {"loss": loss, "kl": kl, "reconstruction": reconstruction, "neg_elbo": neg_elbo}


# --8<-- [end:objective]


class Trainer(TorchTrainer):
    def __init__(self, network, objective, latent, temperature, lr, seed, devices=1):
        layout.check(network, objective)
        self.network, self.objective, self.latent = network, objective, latent
        self.temperature, self.seed, self.devices = float(temperature), seed, devices
        self.shapes = layout.canonical_shapes(network, latent)
        torch.manual_seed(seed)  # the layers draw their first weights from torch's generator
        self.model = VAE(network, latent)
        [self.trained] = self.spread(self.model)  # DistributedDataParallel on several devices
        options = adam_options(**layout.ADAM)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr, **options)
        self.scaler = precision.grad_scaler()  # float16's loss scale

    def figures(self, x, x_hat, mu, logvar):
        return loss_function(x, x_hat, mu, logvar, self.temperature, self.objective)

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = self.epoch_batches([tensor(x)], batch_size, shuffle_seed)
        noise = torch.Generator().manual_seed(shuffle_seed)
        self.model.train()
        means = RunningMeans(layout.FIGURES)
        for (x_batch,) in loader:
            self.optimizer.zero_grad()
            eps = self.share_of(
                lambda n: torch.randn(n, self.latent, generator=noise), len(x_batch)
            )
            x_hat, mu, logvar = self.trained(x_batch, eps=eps)
            figures = self.figures(x_batch, x_hat, mu, logvar)
            self.backward_and_step(figures["loss"], self.optimizer, self.scaler)
            means.add_all({k: v.item() for k, v in figures.items()}, len(x_batch))
            on_batch(means.means())
        return self.mean_over_processes(means.means())

    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        noise = torch.Generator().manual_seed(self.seed)  # the same draws at every call
        self.model.eval()
        return self.held_out_means(
            [tensor(x)],
            batch_size,
            lambda x_batch: self.figures(x_batch, *self.model(x_batch, generator=noise)),
        )

    def encode(self, x):
        return self.infer(self.model.encoder, x)

    def decode(self, z):
        return self.infer(self.model.decoder, z)[..., 0].copy()

    def sample(self, n, seed, scale=1.0):
        """Decoder means of z ~ N(0, scale^2 I), z drawn by a torch.Generator seeded with seed."""
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed))
        return self.decode((scale * z).numpy())

    def networks(self):
        return {"encoder": self.model.encoder, "decoder": self.model.decoder}

    def check_weights(self, weights):
        layout.check_weights(self.shapes, weights)

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: the loss and its gradients on (x,) with the noise (B, latent) given."""
        x, eps = tensor(batch[0]), tensor(noise)
        return self.loss_and_gradients(lambda: self.figures(x, *self.model(x, eps))["loss"])

    def state(self):
        arrays = layout.pack_state(*self.weights_and_adam_state())
        return arrays, layout.state_meta(ENGINE, self.network, self.objective, self.latent)

    def load_state(self, arrays, meta):
        self.load_weights_and_adam_state(*layout.unpack_state(arrays, meta, self.shapes))
