"""Score models in PyTorch: an nn.Module, autograd, a DataLoader, zero_grad / backward / step.

The lecture's score matching needs the divergence of the network's output with respect to its
input inside the loss. The exact one is the trace of the Jacobian, which torch.func writes the
way the lecture's JAX hint does: torch.func.vmap(torch.func.jacrev(model)) gives one (D, D)
Jacobian per sample, and the loss's backward() goes through it to the weights. The sliced
(Hutchinson) estimate is a vector-Jacobian product, torch.autograd.grad(..., create_graph=True).

Every random draw (noise levels, noise, probes, Langevin noise) comes from a torch.Generator
seeded from the loop's shuffle seed at the start of each epoch (or from the run's seed when
sampling), never from the global one: an epoch's draws are a function of the run's seed and the
epoch alone, so a resumed run draws what an uninterrupted one drew.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from customfit import precision, weights as canonical
from customfit.tasks.score import layout

ENGINE = "torch"
ACTIVATIONS = {"softplus": F.softplus, "silu": F.silu}


def _tensor(x, dtype=torch.float32):
    return torch.from_numpy(np.asarray(x)).to(dtype)


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
            x = x / torch.sqrt(sigma ** 2 + self.sigma_data ** 2)
        h = x if sigma is None else torch.cat([x, torch.log(sigma)], dim=-1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        h = self.out(h)
        return h if sigma is None else h / sigma


def score_matching(model, x, divergence, probe=None):
    """The lecture's loss, mean |s|^2 + 2 div s, with its two parts."""
    if divergence == "exact":
        s = model(x)
        jacobians = torch.func.vmap(torch.func.jacrev(model))(x)  # (B, D, D)
        div = jacobians.diagonal(dim1=1, dim2=2).sum(dim=1)
    else:
        with torch.enable_grad():  # evaluate() runs under no_grad; the probe's product needs a graph
            x = x.detach().requires_grad_(True)
            s = model(x)
            vjp, = torch.autograd.grad((s * probe).sum(), x, create_graph=True)
            div = (vjp * probe).sum(dim=1)
    squared_norm = s.pow(2).sum(dim=1).mean()
    div = div.mean()
    return {"loss": squared_norm + 2.0 * div, "squared_norm": squared_norm, "divergence": div}


def denoising_score_matching(model, x, sigma, z):
    """mean | sigma s(x + sigma z, sigma) + z |^2; sigma (B, 1), one noise level per sample."""
    s = model(x + sigma * z, sigma)
    return {"loss": (sigma * s + z).pow(2).sum(dim=1).mean()}


class Trainer:
    def __init__(self, method, network, lr, seed, *, sigmas=None, divergence="exact",
                 decay_steps=None):
        layout.check(method, network, divergence, sigmas)
        self.method, self.network, self.seed = method, network, seed
        self.divergence = divergence if method == "lecture" else None
        self.sigmas = None if sigmas is None else torch.from_numpy(np.asarray(sigmas, np.float32))
        torch.manual_seed(seed)  # nn.Linear initialises itself from torch's global generator
        self.model = ScoreNet(network)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr,
                                          betas=(layout.ADAM["beta_1"], layout.ADAM["beta_2"]),
                                          eps=layout.ADAM["epsilon"])
        self.decay_steps = decay_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._decay)
        self.scaler = precision.grad_scaler()

    def _decay(self, step):
        return layout.cosine_decay(step, self.decay_steps)

    # ---- the objective

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

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        loader = DataLoader(TensorDataset(_tensor(x)), batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(shuffle_seed))
        noise = torch.Generator().manual_seed(shuffle_seed)
        self.model.train()
        means = layout.RunningMeans(self.method)
        for (x_batch,) in loader:
            self.optimizer.zero_grad()
            figures = self._figures(x_batch, self._draw(x_batch, noise))
            # Under float16 the scaler scales the loss and skips a step whose gradients overflow;
            # otherwise it passes both through (customfit/precision.py).
            self.scaler.scale(figures["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            means.add({k: v.item() for k, v in figures.items()}, len(x_batch))
            on_batch(means.means())
        return means.means()

    def evaluate(self, x, batch_size):
        noise = torch.Generator().manual_seed(self.seed)  # the same held-out draws at every call
        self.model.eval()
        means = layout.RunningMeans(self.method)
        with torch.no_grad():
            for (x_batch,) in DataLoader(TensorDataset(_tensor(x)), batch_size=batch_size):
                figures = self._figures(x_batch, self._draw(x_batch, noise))
                means.add({k: v.item() for k, v in figures.items()}, len(x_batch))
        return means.means()

    # ---- the score and Langevin sampling

    def _sigma(self, level, n):
        return None if level is None else self.sigmas[level].expand(n, 1)

    @torch.no_grad()
    def score(self, x, level=None):
        x = _tensor(x)
        return self.model(x, self._sigma(level, len(x))).numpy().copy()

    @torch.no_grad()
    def _step(self, x, eps, level, xi):
        return x + eps * self.model(x, self._sigma(level, len(x))) \
            + math.sqrt(2.0 * eps * layout.TEMPERATURE) * xi

    def langevin_step(self, x, noise, eps, level=None):
        """One Langevin step from x with the given noise xi (the parity hook)."""
        return self._step(_tensor(x), eps, level, _tensor(noise)).numpy().copy()

    @torch.no_grad()
    def _denoise(self, x):
        last = len(self.sigmas) - 1
        return x + self.sigmas[last] ** 2 * self.model(x, self._sigma(last, len(x)))

    def denoise(self, x):
        return self._denoise(_tensor(x)).numpy().copy()

    def sample(self, n, seed, steps, step_size, start_std, record=()):
        """Langevin (lecture) or annealed Langevin and a last denoising step (dsm) from
        N(0, start_std^2 I), every draw from a torch.Generator seeded with `seed`. Returns the
        samples and the states after the steps numbered in `record` (frames, 1 = the first)."""
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

    # ---- weights, the parity hook, state

    def get_weights(self):
        return canonical.to_canonical(ENGINE, [p.detach().numpy() for p in self.model.parameters()])

    def set_weights(self, weights):
        layout.check_weights(self.network, weights)
        with torch.no_grad():
            for parameter, value in zip(self.model.parameters(),
                                        canonical.from_canonical(ENGINE, weights)):
                parameter.copy_(torch.from_numpy(np.asarray(value, np.float32)))

    def objective_and_grads(self, batch, noise=None):
        """The training objective and its gradients (canonical layout) on batch (x,), with the
        objective's draws given: None (exact divergence), {"probe"} or {"levels", "z"}."""
        (x,) = batch
        given = {} if noise is None else {
            k: _tensor(v, torch.int64 if k == "levels" else torch.float32) for k, v in noise.items()}
        self.model.train()
        self.model.zero_grad()
        loss = self._figures(_tensor(x), given)["loss"]
        loss.backward()
        grads = canonical.to_canonical(ENGINE, [p.grad.numpy() for p in self.model.parameters()])
        self.model.zero_grad()  # leave nothing behind for the next optimizer step to see
        return loss.item(), grads

    def state(self):
        params = list(self.model.parameters())
        first, second, step = [], [], 0
        for p in params:
            adam = self.optimizer.state.get(p, {})
            # Before the first step torch has no Adam state yet: its moments are zeros then.
            first.append(adam["exp_avg"].numpy() if adam else np.zeros(p.shape, np.float32))
            second.append(adam["exp_avg_sq"].numpy() if adam else np.zeros(p.shape, np.float32))
            if adam:
                step = int(adam["step"].item())
        arrays = layout.pack_state(self.get_weights(), canonical.to_canonical(ENGINE, first),
                                   canonical.to_canonical(ENGINE, second), step)
        return arrays, layout.state_meta(ENGINE, self.method, self.network, self.divergence,
                                         None if self.sigmas is None else self.sigmas.numpy())

    def load_state(self, arrays, meta):
        weights, first, second, step = layout.unpack_state(arrays, meta, self.network)
        self.set_weights(weights)
        saved = self.optimizer.state_dict()
        first, second = canonical.from_canonical(ENGINE, first), canonical.from_canonical(ENGINE, second)
        saved["state"] = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)), "exp_avg": torch.from_numpy(m),
                "exp_avg_sq": torch.from_numpy(v)}
            for i, (m, v) in enumerate(zip(first, second))}
        self.optimizer.load_state_dict(saved)
        # The schedule's place is the optimizer's step count: pick it up from there.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._decay,
                                                           last_epoch=step - 1)
