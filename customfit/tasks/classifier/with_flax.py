"""The classifier in JAX with Flax NNX: an nnx.Module, nnx.value_and_grad, optax, @nnx.jit.

This is the lecture's Flax workflow on the current API: `nnx.Optimizer(model, tx, wrt=nnx.Param)`
and `optimizer.update(model, grads)`. The plumbing (devices, precision, batches from a NumPy
permutation, canonical weights and Adam state) is customfit/trainers/flax_trainer.py's.
"""

import functools

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from customfit.tasks.classifier import layout
from customfit.tasks.classifier.architectures import output_shape
from customfit.trainers.flax_trainer import (
    FlaxTrainer,
    RunningMeans,
    adam,
    canonical_codec,
    kernels_and_biases,
)

ENGINE = "flax"


# --8<-- [start:model]
def flatten(x):
    return x.reshape(x.shape[0], -1)  # NHWC -> (N, H*W*C): Keras's order, nothing to permute


class Classifier(nnx.Module):
    """The architecture tuples (see architectures.py) as one nnx.Sequential of layers and plain
    functions. nnx.Linear and nnx.Conv already store their kernels in Keras's layout."""

    def __init__(self, layers, input_shape, rngs: nnx.Rngs):
        steps = []
        shape = tuple(input_shape)
        for layer, out_shape in zip(layers, output_shape(layers, input_shape)):
            kind = layer[0]
            if kind == "dense":
                steps.append(nnx.Linear(shape[-1], layer[1], rngs=rngs))
            elif kind == "conv":
                _, filters, kernel, padding, _ = layer
                steps.append(
                    nnx.Conv(
                        shape[-1], filters, (kernel, kernel), padding=padding.upper(), rngs=rngs
                    )
                )
            elif kind == "maxpool":
                size = (layer[1], layer[1])
                steps.append(
                    functools.partial(
                        nnx.max_pool, window_shape=size, strides=size, padding="VALID"
                    )
                )
            elif kind == "flatten":
                steps.append(flatten)
            if kind in ("dense", "conv") and layer[-1] == "relu":
                steps.append(nnx.relu)
            shape = out_shape
        self.net = nnx.Sequential(*steps)

    def __call__(self, x):
        # Under --precision mixed the layers compute in bfloat16; the loss and softmax in float32.
        return self.net(x).astype(jnp.float32)

    def weighted(self):
        """The indices of the layers holding weights, in order."""
        return [
            i
            for i, layer in enumerate(self.net.layers)
            if isinstance(layer, (nnx.Linear, nnx.Conv))
        ]


# --8<-- [end:model]


# --8<-- [start:objective]
def cross_entropy(logits, labels):
    # On logits, never log(softmax): optax's version is the stable one.
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def loss(model, x, y):
    return cross_entropy(model(x), y)


# --8<-- [end:objective]


# --8<-- [start:step]
# No layer here behaves differently in training and inference (no dropout, no batch-norm), so
# the model needs no train()/eval() switch: the same __call__ serves both.


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        logits = model(x)
        return cross_entropy(logits, y), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)


@nnx.jit
def eval_step(model, x, y):
    logits = model(x)
    return cross_entropy(logits, y), jnp.sum(jnp.argmax(logits, axis=-1) == y)


# --8<-- [end:step]


def labels(y):
    return np.asarray(y, dtype=np.int32)  # JAX's default integers are 32-bit


class Trainer(FlaxTrainer):
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        super().__init__(devices)
        shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        self.model = self.initialized(lambda r: Classifier(layers, input_shape, rngs=r), seed)
        self.optimizer = nnx.Optimizer(self.model, adam(lr, 0.9, 0.999, 1e-7), wrt=nnx.Param)
        paths = kernels_and_biases(self.model.weighted(), within=("net", "layers"))
        codec = canonical_codec(shapes, ENGINE)
        self.keep({"model": (self.model, self.optimizer)}, {"model": paths}, codec)

    # --8<-- [start:step]
    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        means = RunningMeans(("loss", "accuracy"))
        for x_batch, y_batch in self.epoch_batches((x, labels(y)), batch_size, shuffle_seed):
            loss, correct = train_step(self.model, self.optimizer, x_batch, y_batch)
            means.add("loss", loss, len(x_batch))
            means.add_total("accuracy", correct, len(x_batch))
            on_batch(means.means())
        return means.means()

    # --8<-- [end:step]

    def evaluate(self, x, y, batch_size):
        means = RunningMeans(("loss", "accuracy"))
        for x_batch, y_batch in self.held_out_batches((x, labels(y)), batch_size):
            loss, correct = eval_step(self.model, x_batch, y_batch)
            means.add("loss", loss, len(x_batch))
            means.add_total("accuracy", correct, len(x_batch))
        return means.means()

    def predict_proba(self, x):
        return np.asarray(nnx.softmax(self.model(jnp.asarray(x)), axis=-1))

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = batch
        return self.parity(loss, self.model, x, labels(y))
