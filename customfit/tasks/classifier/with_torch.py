"""The classifier in PyTorch: an nn.Module, autograd, DataLoader, zero_grad/backward/step.

This is the lecture's PyTorch workflow, with its two slips fixed: the model switches mode with
train()/eval() instead of taking a `training=` argument, and the loss is F.cross_entropy on logits
instead of log(softmax(.)), which overflows where cross_entropy does not.
"""

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from customfit import compute_device, precision, weights as layout
from customfit.tasks.classifier.architectures import output_shape
from customfit.tasks.classifier.tally import Tally

ENGINE = "torch"


def _tensors(x, y=None):
    """float32 inputs and int64 labels, as nn.Linear and F.cross_entropy expect."""
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return x if y is None else (x, torch.from_numpy(np.asarray(y, dtype=np.int64)))


class ChannelsFirst(nn.Module):
    """NHWC -> NCHW: the data (and every other engine) is channels-last; nn.Conv2d is not."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class FlattenChannelsLast(nn.Module):
    """Flatten in (H, W, C) order, as Keras does, rather than nn.Flatten's (C, H, W): then the
    first dense layer after it takes its inputs in the same order on every engine, and its weights
    map 1:1 to Keras's (only transposed), with no shuffling of rows."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def build_model(layers, input_shape):
    """An nn.Sequential from the architecture tuples (see architectures.py)."""
    modules = []
    shape = tuple(input_shape)
    channels_first = False
    for layer, out_shape in zip(layers, output_shape(layers, input_shape)):
        kind = layer[0]
        if kind in ("conv", "maxpool") and not channels_first:
            modules.append(ChannelsFirst())
            channels_first = True
        if kind == "dense":
            if len(shape) != 1:
                raise ValueError(f"a dense layer needs flat inputs, given shape {shape}")
            modules.append(nn.Linear(shape[0], layer[1]))
        elif kind == "conv":
            # torch's padding names match Keras's; "same" pads 1 on each side for a 3x3 kernel.
            modules.append(nn.Conv2d(shape[-1], layer[1], layer[2], padding=layer[3]))
        elif kind == "maxpool":
            modules.append(nn.MaxPool2d(layer[1]))
        elif kind == "flatten":
            modules.append(FlattenChannelsLast() if channels_first else nn.Flatten())
            channels_first = False
        if kind in ("dense", "conv") and layer[-1] == "relu":
            modules.append(nn.ReLU())
        shape = out_shape
    return nn.Sequential(*modules)


class Trainer:
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        self._shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        # nn.Linear and nn.Conv2d initialise themselves from torch's global generator.
        torch.manual_seed(seed)
        # --device: the model and each batch on the run's device (torch moves nothing itself);
        # the DataLoader stays on the CPU, as PyTorch's examples keep it.
        self.device = compute_device.torch_device()
        self.model = build_model(layers, input_shape).to(self.device)
        self.devices = devices
        # On several devices: one process each (customfit/parallel/process_group.py), the model
        # wrapped in DistributedDataParallel, which averages the gradients during backward().
        self.trained = self.model if devices == 1 else _distributed(self.model, devices)
        # eps=1e-7: Keras's default, so that every engine runs the same Adam settings.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr,
                                          betas=(0.9, 0.999), eps=1e-7)
        # --precision mixed: forward passes under torch.autocast; the scaler scales the loss
        # only under float16 (otherwise it passes everything through).
        self.scaler = precision.grad_scaler()

    def _loader(self, dataset, batch_size, shuffle_seed):
        from customfit.parallel import process_group

        return process_group.epoch_loader(dataset, batch_size, shuffle_seed, self.devices)

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        loader = self._loader(TensorDataset(*_tensors(x, y)), batch_size, shuffle_seed)
        self.model.train()
        tally = Tally()
        for x_batch, y_batch in loader:
            x_batch, y_batch = x_batch.to(self.device), y_batch.to(self.device)
            self.optimizer.zero_grad()
            with precision.autocast():
                logits = self.trained(x_batch).float()
                loss = F.cross_entropy(logits, y_batch)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            tally.add(loss.item(), (logits.argmax(dim=1) == y_batch).sum().item(), len(x_batch))
            on_batch(tally.means())
        return mean_over_processes(tally.means()) if self.devices > 1 else tally.means()

    # Held-out figures and predictions: every process computes them on the whole held-out set
    # with its own copy of the model (the copies are equal), so nothing needs gathering.
    def evaluate(self, x, y, batch_size):
        loader = DataLoader(TensorDataset(*_tensors(x, y)),
                            batch_size=batch_size)
        self.model.eval()
        tally = Tally()
        with torch.no_grad(), precision.autocast():  # no graph: nothing is differentiated
            for x_batch, y_batch in loader:
                x_batch, y_batch = x_batch.to(self.device), y_batch.to(self.device)
                logits = self.model(x_batch).float()
                tally.add(F.cross_entropy(logits, y_batch).item(),
                          (logits.argmax(dim=1) == y_batch).sum().item(), len(x_batch))
        return tally.means()

    def predict_proba(self, x):
        self.model.eval()
        with torch.no_grad(), precision.autocast():
            return F.softmax(self.model(_tensors(x).to(self.device)).float(), dim=1).cpu().numpy()

    def get_weights(self):
        return layout.to_canonical(ENGINE, [p.detach().cpu().numpy()
                                            for p in self.model.parameters()])

    def set_weights(self, weights):
        layout.check_shapes(self._shapes, weights)
        with torch.no_grad():
            for parameter, value in zip(self.model.parameters(),
                                        layout.from_canonical(ENGINE, weights)):
                parameter.copy_(torch.from_numpy(value))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = batch
        self.model.train()
        self.model.zero_grad()
        x, y = (t.to(self.device) for t in _tensors(x, y))
        with precision.autocast():
            loss = F.cross_entropy(self.model(x).float(), y)
        loss.backward()
        grads = [p.grad.cpu().numpy().copy() for p in self.model.parameters()]
        self.model.zero_grad()  # leave nothing behind for the next optimizer step to see
        return loss.item(), layout.to_canonical(ENGINE, grads)

    def state(self):
        parameters = list(self.model.parameters())
        adam = [self.optimizer.state.get(p, {}) for p in parameters]
        # Before the first step torch has no Adam state yet: its moments are zeros then.
        first = [s["exp_avg"].cpu().numpy() if s else np.zeros(p.shape, np.float32)
                 for s, p in zip(adam, parameters)]
        second = [s["exp_avg_sq"].cpu().numpy() if s else np.zeros(p.shape, np.float32)
                  for s, p in zip(adam, parameters)]
        step = int(adam[0]["step"].item()) if adam[0] else 0
        arrays = layout.pack_adam_state(self.get_weights(), layout.to_canonical(ENGINE, first),
                                        layout.to_canonical(ENGINE, second), step)
        return arrays, {"format": layout.STATE_FORMAT, "engine": ENGINE}

    def load_state(self, arrays, meta):
        layout.check_state_meta(meta)
        weights, first, second, step = layout.unpack_adam_state(arrays, self._shapes)
        self.set_weights(weights)
        saved = self.optimizer.state_dict()
        saved["state"] = {} if step == 0 else {
            i: {"step": torch.tensor(float(step)), "exp_avg": torch.from_numpy(m),
                "exp_avg_sq": torch.from_numpy(v)}
            for i, (m, v) in enumerate(zip(layout.from_canonical(ENGINE, first),
                                           layout.from_canonical(ENGINE, second)))}
        self.optimizer.load_state_dict(saved)


def _distributed(model, devices):
    from customfit.parallel import process_group

    process_group.check_world(devices)
    # The first convolution's gradient comes out channels-last (the input is permuted from
    # NHWC), its weight is not: DDP warns that it copies it into its bucket. It does, correctly.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return torch.nn.parallel.DistributedDataParallel(model)



def mean_over_processes(means):
    from customfit.parallel import process_group

    return process_group.mean_over_processes(means)
