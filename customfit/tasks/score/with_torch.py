"""Score models in PyTorch: an nn.Module, autograd, a DataLoader, zero_grad / backward / step.
The lecture's loss needs the divergence of s(x): exactly, the trace of torch.func.vmap(
torch.func.jacrev(model)), as the lecture's JAX hint writes it; sliced (Hutchinson), a
vector-Jacobian product, torch.autograd.grad(..., create_graph=True). Every draw comes from a
torch.Generator seeded per epoch (or by the sampling seed): a resumed run draws what an
uninterrupted one drew. The plumbing is TorchTrainer's (customfit/trainers/torch_trainer.py)."""

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from customfit import precision
from customfit.tasks.score import layout
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.torch_trainer import ENGINE, TorchTrainer, adam_options, tensor

ACTIVATIONS = {"softplus": F.softplus, "silu": F.silu}


# --8<-- [start:model]
class ScoreNet(nn.Module):
    """s(x) (the lecture's model), or s(x, sigma) = net([x, log sigma]) / sigma (dsm; the
    digits network scales x by 1 / sqrt(sigma^2 + sigma_data^2) first)."""

    def __init__(self, network):
        super().__init__()
        width, hidden, out = layout.dims(network)
        self.activation = ACTIVATIONS[layout.NETWORKS[network]["activation"]]
        self.sigma_data = layout.NETWORKS[network]["sigma_data"]
        self.hidden = nn.ModuleList()
        for units in hidden:
            self.hidden.append(nn.Linear(width, units))
            width = units
        self.out = nn.Linear(width, out)

    @precision.autocast_forward  # --precision mixed: customfit/precision.py
    def forward(self, x, sigma=None):
        if sigma is not None and self.sigma_data is not None:
            x = x / torch.sqrt(sigma**2 + self.sigma_data**2)
        h = x if sigma is None else torch.cat([x, torch.log(sigma)], dim=-1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        h = self.out(h)
        return h if sigma is None else h / sigma


# --8<-- [end:model]


# --8<-- [start:objective]
def score_matching(model, x, divergence, probe=None):
    """The lecture's loss, mean |s|^2 + 2 div s, with its two parts."""
    if divergence == "exact":
        s = model(x)
        jacobians = torch.func.vmap(torch.func.jacrev(model))(x)  # (B, D, D)
        div = jacobians.diagonal(dim1=1, dim2=2).sum(dim=1)
    else:
        with torch.enable_grad():  # evaluate() runs under no_grad; the product needs a graph
            x = x.detach().requires_grad_(True)
            s = model(x)
            (vjp,) = torch.autograd.grad((s * probe).sum(), x, create_graph=True)
            div = (vjp * probe).sum(dim=1)
    squared_norm = s.pow(2).sum(dim=1).mean()
    div = div.mean()
    return {"loss": squared_norm + 2.0 * div, "squared_norm": squared_norm, "divergence": div}


def denoising_score_matching(model, x, sigma, z):
    """mean | sigma s(x + sigma z, sigma) + z |^2; sigma (B, 1), one noise level per sample."""
    s = model(x + sigma * z, sigma)
    return {"loss": (sigma * s + z).pow(2).sum(dim=1).mean()}


# --8<-- [end:objective]


class Trainer(TorchTrainer):
    def __init__(
        self, method, network, lr, seed, *, sigmas=None, divergence="exact", decay_steps=None
    ):
        self.settings = layout.settings(method, network, divergence, sigmas)
        self.method, self.network, self.divergence, sigmas = self.settings
        self.seed, self.sigmas = seed, None if sigmas is None else torch.from_numpy(sigmas)
        torch.manual_seed(seed)  # nn.Linear initialises itself from torch's global generator
        self.model = ScoreNet(network)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr, **adam_options(**layout.ADAM)
        )
        self.decay = functools.partial(layout.cosine_decay, decay_steps=decay_steps)
        self.scheduler = LambdaLR(self.optimizer, self.decay)
        self.scaler = precision.grad_scaler()  # float16's loss scale

    def _draw(self, x, generator):
        """The objective's random draws for batch x: {} (exact), a probe, or levels and noise."""
        if self.method == "dsm":
            levels = torch.randint(0, len(self.sigmas), (len(x),), generator=generator)
            return {"levels": levels, "z": torch.randn(x.shape, generator=generator)}
        if self.divergence == "hutchinson":
            return {"probe": torch.randint(0, 2, x.shape, generator=generator).float() * 2.0 - 1.0}
        return {}

    def _figures(self, x, noise):
        if self.method == "dsm":
            sigma = self.sigmas[noise["levels"]].unsqueeze(1)
            return denoising_score_matching(self.model, x, sigma, noise["z"])
        return score_matching(self.model, x, self.divergence, noise.get("probe"))

    # --8<-- [start:step]
    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = self.epoch_batches([tensor(x)], batch_size, shuffle_seed)
        noise = torch.Generator().manual_seed(shuffle_seed)
        self.model.train()
        means = RunningMeans(layout.FIGURES[self.method])
        for (x_batch,) in loader:
            self.optimizer.zero_grad()
            figures = self._figures(x_batch, self._draw(x_batch, noise))
            self.backward_and_step(figures["loss"], self.optimizer, self.scaler)
            self.scheduler.step()
            means.add_all({k: v.item() for k, v in figures.items()}, len(x_batch))
            on_batch(means.means())
        return means.means()

    # --8<-- [end:step]

    def evaluate(self, x, batch_size):
        noise = torch.Generator().manual_seed(self.seed)  # the same held-out draws at every call
        self.model.eval()
        return self.held_out_means(
            [tensor(x)],
            batch_size,
            lambda x_batch: self._figures(x_batch, self._draw(x_batch, noise)),
        )

    def _sigma(self, level, n):
        return None if level is None else self.sigmas[level].expand(n, 1)

    @torch.no_grad()
    def score(self, x, level=None):
        x = tensor(x)
        return self.model(x, self._sigma(level, len(x))).numpy().copy()

    @torch.no_grad()
    def _step(self, x, eps, level, xi):
        s = self.model(x, self._sigma(level, len(x)))
        return x + eps * s + math.sqrt(2.0 * eps * layout.TEMPERATURE) * xi

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        return self._step(tensor(x), eps, level, tensor(noise)).numpy().copy()

    @torch.no_grad()
    def _denoise(self, x):
        last = len(self.sigmas) - 1
        return x + self.sigmas[last] ** 2 * self.model(x, self._sigma(last, len(x)))

    def denoise(self, x):
        return self._denoise(tensor(x)).numpy().copy()

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (lecture) or annealed Langevin and a denoising step (dsm) from N(0, start_std^2
        I): the samples, and the states after the steps numbered in `record` (1 = the first)."""
        self.model.eval()
        generator = torch.Generator().manual_seed(seed)
        data = layout.NETWORKS[self.network]["data"]
        x = start_std * torch.randn((n, data), generator=generator)
        frames = []
        plan = layout.langevin_plan(self.method, steps, step_size, self.sigmas)
        for level, eps, count, keep in layout.segments(plan, record):
            for _ in range(count):
                x = self._step(x, eps, level, torch.randn(x.shape, generator=generator))
            if keep:
                frames.append(x.numpy().copy())
        if self.method == "dsm":
            x = self._denoise(x)
        return x.numpy().copy(), np.asarray(frames, np.float32).reshape(len(frames), n, data)

    def check_weights(self, weights):
        layout.check_weights(self.network, weights)

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,), with the
        objective's draws given: None (exact divergence), {"probe"} or {"levels", "z"}."""
        given = {k: torch.from_numpy(v) for k, v in layout.parity_draws(noise).items()}
        x = tensor(batch[0])
        return self.loss_and_gradients(lambda: self._figures(x, given)["loss"], self.model)

    def state(self):
        arrays = layout.pack_state(*self.weights_and_adam_state())
        return arrays, layout.state_meta(ENGINE, *self.settings)

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.network)
        self.load_weights_and_adam_state(weights, first, second, step)
        # The schedule's place is the optimizer's step count: pick it up from there.
        self.scheduler = LambdaLR(self.optimizer, self.decay, last_epoch=step - 1)
