"""The classifier in PyTorch: an nn.Module, autograd, DataLoader, zero_grad/backward/step.

This is the lecture's PyTorch workflow, with its two slips fixed: the model switches mode with
train()/eval() instead of taking a `training=` argument, and the loss is F.cross_entropy on logits
instead of log(softmax(.)), which overflows where cross_entropy does not. The plumbing (canonical
weights, Adam state, the parity hook's gradients, several processes, float16) is TorchTrainer's:
customfit/trainers/torch_trainer.py.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from customfit import compute_device, precision
from customfit.trainers import canonical
from customfit.tasks.classifier import layout
from customfit.tasks.classifier.architectures import output_shape
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.torch_trainer import (
    TorchTrainer,
    flatten_channels_last,
    held_out_batches,
    tensor,
)


def tensors(x, y=None):
    """float32 inputs and int64 labels, as nn.Linear and F.cross_entropy expect."""
    return tensor(x) if y is None else (tensor(x), tensor(y, np.int64))


# --8<-- [start:model]
class ChannelsFirst(nn.Module):
    """NHWC -> NCHW: the data (and every other engine) is channels-last; nn.Conv2d is not."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class FlattenChannelsLast(nn.Module):
    """Flatten in (H, W, C) order, as Keras does, rather than nn.Flatten's (C, H, W): then the
    first dense layer after it takes its inputs in the same order on every engine, and its weights
    map 1:1 to Keras's (only transposed), with no shuffling of rows."""

    def forward(self, x):
        return flatten_channels_last(x)


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


# --8<-- [end:model]


# --8<-- [start:objective]
def objective(model, x, y):
    """(mean cross-entropy, logits) on a batch; logits computed under --precision mixed's
    autocast, then widened to float32 for the loss."""
    with precision.autocast():
        logits = model(x).float()
        return F.cross_entropy(logits, y), logits


# --8<-- [end:objective]


class Trainer(TorchTrainer):
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        self.shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        # nn.Linear and nn.Conv2d initialise themselves from torch's global generator.
        torch.manual_seed(seed)
        # --device: the model and each batch on the run's device (torch moves nothing itself);
        # the DataLoader stays on the CPU, as PyTorch's examples keep it.
        self.device = compute_device.torch_device()
        self.model = build_model(layers, input_shape).to(self.device)
        self.devices = devices
        [self.trained] = self.spread(self.model)  # DistributedDataParallel on several devices
        # eps=1e-7: Keras's default, so that every engine runs the same Adam settings.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-7
        )
        # --precision mixed: forward passes under torch.autocast; the scaler scales the loss
        # only under float16 (otherwise it passes everything through).
        self.scaler = precision.grad_scaler()

    # --8<-- [start:step]
    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        loader = self.epoch_batches(tensors(x, y), batch_size, shuffle_seed)
        self.model.train()
        means = RunningMeans(("loss", "accuracy"))
        for x_batch, y_batch in loader:
            x_batch, y_batch = x_batch.to(self.device), y_batch.to(self.device)
            self.optimizer.zero_grad()
            loss, logits = objective(self.trained, x_batch, y_batch)
            self.backward_and_step(loss, self.optimizer, self.scaler)
            means.add("loss", loss.item(), len(x_batch))
            means.add_total(
                "accuracy", (logits.argmax(dim=1) == y_batch).sum().item(), len(x_batch)
            )
            on_batch(means.means())
        return self.mean_over_processes(means.means())

    # --8<-- [end:step]

    def evaluate(self, x, y, batch_size):
        self.model.eval()
        means = RunningMeans(("loss", "accuracy"))
        with torch.no_grad():  # no graph: nothing is differentiated
            for x_batch, y_batch in held_out_batches(tensors(x, y), batch_size):
                x_batch, y_batch = x_batch.to(self.device), y_batch.to(self.device)
                loss, logits = objective(self.model, x_batch, y_batch)
                means.add("loss", loss.item(), len(x_batch))
                means.add_total(
                    "accuracy", (logits.argmax(dim=1) == y_batch).sum().item(), len(x_batch)
                )
        return means.means()

    def predict_proba(self, x):
        self.model.eval()
        with torch.no_grad(), precision.autocast():
            return F.softmax(self.model(tensors(x).to(self.device)).float(), dim=1).cpu().numpy()

    # ---- for TorchTrainer; the parity hook and the checkpoint, as weights.py says

    def check_weights(self, weights):
        canonical.check_shapes(self.shapes, weights)

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = (t.to(self.device) for t in tensors(*batch))
        return self.loss_and_gradients(lambda: objective(self.model, x, y)[0], self.model)

    def state(self):
        arrays = canonical.pack_adam_state(*self.weights_and_adam_state())
        return arrays, {"format": canonical.STATE_FORMAT, "engine": "torch"}

    def load_state(self, arrays, meta):
        canonical.check_state_meta(meta)
        self.load_weights_and_adam_state(*canonical.unpack_adam_state(arrays, self.shapes))
