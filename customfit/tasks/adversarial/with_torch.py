"""Targeted attacks in PyTorch: autograd with respect to the input instead of the weights.

The idiom: the perturbation is a tensor with requires_grad set, torch.autograd.grad asks for the
objective's gradient with respect to it alone (no weight's .grad is touched, so the optimizer sees
nothing), and the update runs under torch.no_grad() so that autograd does not record it. The
classifier is in eval() mode: for the attack it is a fixed function. The rules are in rules.py;
the classifier, and its plumbing, are classifier/with_torch.py's and trainers/torch_trainer.py's.
"""

import torch
import torch.nn.functional as F

from customfit import precision
from customfit.tasks.adversarial import rules
from customfit.tasks.classifier import with_torch as classifier
from customfit.trainers.torch_trainer import tensor

# Pairs per forward/backward pass, for the whole 3240-pair attack on 2 CPU cores: 512 and 1024
# measured alike, all 3240 at once 20-40% slower.
BATCH_SIZE = 1024


# --8<-- [start:objective]
def objective(model, x, dx, target, method):
    # reduction="sum": each pair's gradient is its own, whatever else shares the batch.
    with precision.autocast():  # --precision mixed: the classifier trained under it
        value = F.cross_entropy(model(x + dx).float(), target, reduction="sum")
    if method == "lecture":
        # torch.abs's gradient at 0 is 0, the subgradient rules.py asks for.
        value = value + rules.LECTURE_C * dx.abs().mean(dim=(1, 2, 3)).sum()
    return value


def objective_and_grad(model, x, dx, target, method):
    dx = dx.detach().requires_grad_(True)
    value = objective(model, x, dx, target, method)
    (grad,) = torch.autograd.grad(value, dx)
    return value.detach(), grad


# --8<-- [end:objective]


# --8<-- [start:step]
def attack_batch(model, x, target, method, eps, steps):
    dx = torch.zeros_like(x)
    alpha = rules.pgd_step_size(eps, steps) if method == "pgd" else None
    for _ in range(steps):
        _, grad = objective_and_grad(model, x, dx, target, method)
        with torch.no_grad():
            if method == "pgd":
                dx = (dx - alpha * grad.sign()).clamp(-eps, eps)
            else:
                dx = dx - rules.LECTURE_STEP * grad
            dx = (x + dx).clamp(0.0, 1.0) - x
    return x + dx


# --8<-- [end:step]


# --8<-- [start:model]
class Trainer(classifier.Trainer):
    """The classifier of classifier/with_torch.py, plus the attack on its current weights."""

    # --8<-- [end:model]

    def attack(self, x, target, *, method, eps, steps, batch_size=None):
        rules.check(method, eps, steps)
        x, target = classifier.tensors(x, target)
        self.model.eval()
        chunks = [
            attack_batch(self.model, x_batch, target_batch, method, eps, steps)
            for x_batch, target_batch in zip(
                x.split(batch_size or BATCH_SIZE), target.split(batch_size or BATCH_SIZE)
            )
        ]
        return torch.cat(chunks).numpy()

    def attack_objective_and_grad(self, x, dx, target, *, method):
        """The parity hook: the batch objective (a sum over pairs) and its gradient w.r.t. dx."""
        rules.check(method, 1.0, 1)
        x, target = classifier.tensors(x, target)
        self.model.eval()
        value, grad = objective_and_grad(self.model, x, tensor(dx), target, method)
        return value.item(), grad.numpy()
