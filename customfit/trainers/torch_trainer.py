"""What every PyTorch engine file needs besides its networks, losses and loop, written once.

A family's customfit/tasks/<family>/with_torch.py subclasses TorchTrainer, as each Keras backend
subclasses one Trainer (keras/src/backend/torch/trainer.py), and says two things: its networks
(`networks`; their registration order is the canonical order of their weights) and how to check
weights handed in (`check_weights`). From those this base gives it:

- get_weights / set_weights in the canonical layout (Keras's; customfit/trainers/canonical.py converts);
- Adam's moments and step count as canonical arrays and back (`adam_state`, `load_adam_state`),
  for the family's layout.py to name in a checkpoint (a GradScaler's scale is kept by
  customfit/loss_scale_state.py, which finds it among the trainer's attributes);
- the parity hook's gradients (`loss_and_gradients`);
- several devices: one process each, DistributedDataParallel (`spread`), each process's share of
  an epoch's batches and of its random draws, running means averaged over the processes;
- --precision: backward and step through torch.amp.GradScaler (`backward_and_step`).

Tensors and arrays go in groups (customfit/trainers/torch_layout.py): a list, or a dict of lists
(one per network), whichever the family's canonical weights are. The small pieces the engine files
share (tensors from NumPy, Keras-alike initialisation and flattening, frozen batch-norm statistics,
held-out batches) are the module functions below.
"""

import contextlib
import functools
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from customfit.trainers import canonical
from customfit.trainers.running_means import RunningMeans
from customfit.trainers.torch_layout import ENGINE, flat, from_canonical, per_group, to_canonical


def tensor(x, dtype=np.float32):
    """A NumPy array (or anything np.asarray takes) as a CPU tensor of NumPy's `dtype`."""
    return torch.from_numpy(np.asarray(x, dtype=dtype))


def nchw(x):
    """NHWC images (every engine's data) as the NCHW tensor nn.Conv2d takes."""
    return tensor(x).permute(0, 3, 1, 2).contiguous()


def flatten_channels_last(h):
    """(N, C, H, W) flattened in (H, W, C) order, as Keras flattens: the dense layer after it
    takes its inputs in the same order on every engine, its weights Keras's (transposed)."""
    return h.permute(0, 2, 3, 1).flatten(1)


def init_like_keras(module):
    """Glorot-uniform kernels and zero biases, as Keras starts (PyTorch's own default is
    Kaiming-uniform): every engine then starts from the same distribution. For Module.apply."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def batch_norm_like_keras(channels, settings):
    """nn.BatchNorm2d with a family's Keras settings (bn_momentum, bn_epsilon). PyTorch's
    momentum is the weight of the new batch: Keras's momentum m is 1 - m here."""
    return nn.BatchNorm2d(
        channels, momentum=1.0 - settings["bn_momentum"], eps=settings["bn_epsilon"]
    )


def adam_options(beta_1, beta_2, epsilon):
    """Keras's Adam settings (a family's layout.ADAM) as torch.optim.Adam's keywords."""
    return {"betas": (beta_1, beta_2), "eps": epsilon}


@contextlib.contextmanager
def frozen_statistics(network):
    """Run `network` in training mode (batch statistics) without moving its running statistics:
    inside, its batch-norm layers update copies of them, which are dropped on the way out. (The
    originals are not written to at all, so autograd, which keeps them for the backward pass,
    sees them unchanged.)"""
    kept = [
        (module, name, buffer)
        for module in network.modules()
        for name, buffer in module.named_buffers(recurse=False)
    ]
    for module, name, buffer in kept:
        setattr(module, name, buffer.clone())
    try:
        yield network
    finally:
        for module, name, buffer in kept:
            setattr(module, name, buffer)


def held_out_batches(tensors, batch_size):
    """The held-out set in order, in batches. It is whole on every process: each process's copy
    of the model is the same, so their figures are too and nothing needs gathering."""
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size)


class TorchTrainer:
    devices = 1  # processes, one per device; a subclass that spreads sets its own

    # ---- what a family says

    def networks(self):
        """The family's networks: one nn.Module (its canonical weights are a list), or a dict of
        them by name (a dict of lists). By default the one network `self.model`."""
        return self.model

    def check_weights(self, weights):
        """Raise ValueError naming the first array that does not fit."""
        raise NotImplementedError

    def weight_tensors(self):
        """Every parameter and buffer of each network (batch norm's running statistics, not its
        batch count), in the order the network registers them: the canonical order, as each
        network builds its layers in the order layout.py lists them (Keras's order too)."""
        return self.per_network(
            lambda network: [
                tensor
                for name, tensor in network.state_dict(keep_vars=True).items()
                if not name.endswith("num_batches_tracked")
            ]
        )

    def trainable_tensors(self):
        """The parameters the optimizers move, in the same order: the gradients' order."""
        return self.per_network(lambda network: list(network.parameters()))

    def per_network(self, function):
        """function(network), or {name: function(network)} for a dict of networks."""
        networks = self.networks()
        if isinstance(networks, dict):
            return {name: function(network) for name, network in networks.items()}
        return function(networks)

    # ---- weights in the canonical layout

    def get_weights(self):
        return to_canonical(self.weight_tensors())

    def set_weights(self, weights):
        self.check_weights(weights)
        with torch.no_grad():
            for target, value in flat(self.weight_tensors(), weights):
                target.copy_(from_canonical(value))

    # ---- Adam's state as canonical arrays

    def adam_state(self, optimizer, parameters):
        """(first moments, second moments, step count) of torch's Adam for `parameters` (a group),
        canonical. Before its first step torch holds no state: the moments are zeros then."""

        def slot(name):
            return per_group(
                lambda group: canonical.to_canonical(
                    ENGINE,
                    [
                        optimizer.state[p][name].cpu().numpy()
                        if optimizer.state.get(p)
                        else np.zeros(p.shape, np.float32)
                        for p in group
                    ],
                ),
                parameters,
            )

        steps = [int(slots["step"].item()) for slots in optimizer.state.values() if slots]
        return slot("exp_avg"), slot("exp_avg_sq"), max(steps, default=0)

    def weights_and_adam_state(self):
        """(weights, first moments, second moments, step count), all canonical, of a family that
        trains with one Adam, `self.optimizer`: what its layout.py packs into a checkpoint."""
        return (self.get_weights(), *self.adam_state(self.optimizer, self.trainable_tensors()))

    def load_weights_and_adam_state(self, weights, first, second, step):
        self.set_weights(weights)
        self.load_adam_state(self.optimizer, self.trainable_tensors(), first, second, step)

    def adam_states(self, optimizers):
        """adam_state() for one optimizer per network ({net: optimizer}), each over that network's
        trainable tensors: ({net: (first, second)}, {net: step})."""
        trainable, moments, steps = self.trainable_tensors(), {}, {}
        for net, optimizer in optimizers.items():
            first, second, steps[net] = self.adam_state(optimizer, trainable[net])
            moments[net] = (first, second)
        return moments, steps

    def load_adam_states(self, optimizers, moments, steps):
        trainable = self.trainable_tensors()
        for net, optimizer in optimizers.items():
            self.load_adam_state(optimizer, trainable[net], *moments[net], steps[net])

    def load_adam_state(self, optimizer, parameters, first, second, step):
        """Put adam_state()'s arrays back into `optimizer`; at step 0, no state, as a new one."""
        order = [p for group in optimizer.param_groups for p in group["params"]]
        index = {id(p): i for i, p in enumerate(order)}
        saved = optimizer.state_dict()
        saved["state"] = (
            {}
            if step == 0
            else {
                index[id(p)]: {
                    "step": torch.tensor(float(step)),
                    "exp_avg": from_canonical(m),
                    "exp_avg_sq": from_canonical(v),
                }
                for p, m, v in flat(parameters, first, second)
            }
        )
        optimizer.load_state_dict(saved)

    # ---- the parity hook

    def loss_and_gradients(self, loss_of, network=None, parameters=None, frozen=()):
        """(value, canonical gradients w.r.t. `parameters`, by default every trainable tensor)
        of the loss loss_of() computes, `network` (by default self.model) in training mode, from
        the current weights; no update, and no .grad left behind for the next optimizer step to
        see. `frozen`: networks that run in training mode without moving their
        running statistics meanwhile (frozen_statistics)."""
        network = self.model if network is None else network
        for each in (network, *frozen):
            each.train()
        network.zero_grad()
        parameters = self.trainable_tensors() if parameters is None else parameters
        with contextlib.ExitStack() as stack:
            for each in frozen:
                stack.enter_context(frozen_statistics(each))
            loss = loss_of()
            loss.backward()
        grads = per_group(
            lambda group: canonical.to_canonical(ENGINE, [p.grad.cpu().numpy() for p in group]),
            parameters,
        )
        for each in (network, *frozen):
            each.zero_grad()
        return loss.item(), grads

    def losses_and_gradients(self, losses, noise):
        """The parity hook of one loss per network (a GAN's): {name: loss_and_gradients()} of
        losses[name](noise[name]) for each name in `noise`, w.r.t. that network's trainable
        tensors, every network in training mode with its running statistics frozen."""
        networks, trainable = self.networks(), self.trainable_tensors()
        return {
            name: self.loss_and_gradients(
                functools.partial(losses[name], tensor(z)),
                networks[name],
                trainable[name],
                frozen=tuple(networks.values()),
            )
            for name, z in noise.items()
        }

    # ---- the held-out figures

    def held_out_means(self, tensors, batch_size, figures):
        """The means of figures(*batch) (a dict of scalars) over held_out_batches(), weighted by
        batch size, computed without a graph."""
        means = None
        with torch.no_grad():
            for batch in held_out_batches(tensors, batch_size):
                found = figures(*batch)
                means = RunningMeans(found) if means is None else means
                means.add_all(found, len(batch[0]))
        return means.means()

    def infer(self, network, *inputs):
        """network(*inputs) in inference mode, without a graph, as NumPy arrays (copies)."""
        network.eval()
        with torch.no_grad():
            outputs = network(*(tensor(x) for x in inputs))
        if isinstance(outputs, tuple):
            return tuple(output.cpu().numpy().copy() for output in outputs)
        return outputs.cpu().numpy().copy()

    # ---- precision

    def backward_and_step(self, loss, optimizer, scaler):
        """loss.backward(), then optimizer.step(), through `scaler` (precision.grad_scaler()):
        under float16 it scales the loss and skips a step whose gradients overflow; otherwise it
        passes both through (customfit/precision.py)."""
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    # ---- several devices: one process each (customfit/parallel/process_group.py)

    def spread(self, *networks, **options):
        """The networks as the updates call them: on one device themselves, on several each
        wrapped in DistributedDataParallel (with `options`), which averages its gradients over
        the processes during backward(). Batch norm stays per process there (torch's SyncBatchNorm
        runs on GPUs only); forward_sync_buffers=False keeps its running statistics each
        process's, rather than rank 0's before every forward pass."""
        if self.devices == 1:
            return list(networks)
        from customfit.parallel import process_group

        process_group.check_world(self.devices)
        # A convolution fed a permuted (channels-last) input gets its gradient in that stride
        # order, its weight does not: DDP warns that it copies it into its bucket. It does,
        # correctly.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return [nn.parallel.DistributedDataParallel(network, **options) for network in networks]

    def epoch_batches(self, tensors, batch_size, shuffle_seed):
        """One epoch's shuffled batches; on several devices this process's share of every global
        batch, taken from the order one process would train in."""
        from customfit.parallel import process_group

        return process_group.epoch_loader(
            TensorDataset(*tensors), batch_size, shuffle_seed, self.devices
        )

    def share_of(self, draw, n):
        """draw(n) on one device. On several, each process draws the global batch's rows, as one
        process would, and keeps every devices-th from its rank: its share's."""
        if self.devices == 1:
            return draw(n)
        from customfit.parallel import process_group

        return draw(n * self.devices)[process_group.rank() :: self.devices]

    def mean_over_processes(self, means):
        """An epoch's running means, averaged over the processes (each saw as many samples)."""
        if self.devices == 1:
            return means
        from customfit.parallel import process_group

        return process_group.mean_over_processes(means)
