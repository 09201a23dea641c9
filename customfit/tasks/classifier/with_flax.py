"""The classifier in JAX with Flax NNX: an nnx.Module, nnx.value_and_grad, optax, @nnx.jit.

This is the lecture's Flax workflow on the current API: `nnx.Optimizer(model, tx, wrt=nnx.Param)`
and `optimizer.update(model, grads)`. Batches come from a NumPy permutation, not from tf.data:
a JAX program has no reason to import TensorFlow.
"""

import functools

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from customfit import precision, weights as layout
from customfit.devices import epoch_order
from customfit.tasks.classifier.architectures import output_shape
from customfit.tasks.classifier.tally import Tally

ENGINE = "flax"


def _flatten(x):
    return x.reshape(x.shape[0], -1)  # NHWC -> (N, H*W*C): Keras's order, nothing to permute


class Classifier(nnx.Module):
    """The architecture tuples (see architectures.py) as one nnx.Sequential of layers and plain
    functions. nnx.Linear and nnx.Conv already store their kernels in Keras's layout."""

    def __init__(self, layers, input_shape, rngs: nnx.Rngs):
        steps = []
        shape = tuple(input_shape)
        # --precision mixed: bfloat16 compute, float32 parameters (param_dtype's default).
        dtype = precision.compute_dtype()
        for layer, out_shape in zip(layers, output_shape(layers, input_shape)):
            kind = layer[0]
            if kind == "dense":
                steps.append(nnx.Linear(shape[-1], layer[1], dtype=dtype, rngs=rngs))
            elif kind == "conv":
                _, filters, kernel, padding, _ = layer
                steps.append(nnx.Conv(shape[-1], filters, (kernel, kernel),
                                      padding=padding.upper(), dtype=dtype, rngs=rngs))
            elif kind == "maxpool":
                size = (layer[1], layer[1])
                steps.append(functools.partial(nnx.max_pool, window_shape=size, strides=size,
                                               padding="VALID"))
            elif kind == "flatten":
                steps.append(_flatten)
            if kind in ("dense", "conv") and layer[-1] == "relu":
                steps.append(nnx.relu)
            shape = out_shape
        self.net = nnx.Sequential(*steps)

    def __call__(self, x):
        return self.net(x).astype(jnp.float32)  # the loss and softmax in float32, always

    def weighted_layers(self):
        """(index, layer) of the layers holding weights, in order."""
        return [(i, layer) for i, layer in enumerate(self.net.layers)
                if isinstance(layer, (nnx.Linear, nnx.Conv))]


def cross_entropy(logits, labels):
    # On logits, never log(softmax): optax's version is the stable one.
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


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


@nnx.jit
def loss_and_grad_step(model, x, y):
    return nnx.value_and_grad(lambda model: cross_entropy(model(x), y))(model)


def _labels(y):
    return np.asarray(y, dtype=np.int32)  # JAX's default integers are 32-bit


class Trainer:
    def __init__(self, layers, input_shape, num_classes, lr, seed, devices=1):
        self._shapes = layout.canonical_shapes(layers, input_shape, num_classes)
        self.model = Classifier(layers, input_shape, rngs=nnx.Rngs(seed))
        tx = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-7)
        self.optimizer = nnx.Optimizer(self.model, tx, wrt=nnx.Param)
        # On several devices: the weights and Adam's moments replicated over a mesh, each batch
        # sharded along it; train_step is the same jitted function (customfit/parallel/mesh.py).
        self.mesh = None if devices == 1 else _batch_mesh(devices)
        if self.mesh is not None:
            self.mesh.replicate(self.model, self.optimizer)

    def train_epoch(self, x, y, batch_size, shuffle_seed, on_batch):
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        if self.mesh is not None:
            order = epoch_order(order, self.mesh.devices)
        y = _labels(y)
        tally = Tally()
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            x_batch, y_batch = x[batch], y[batch]
            if self.mesh is not None:
                x_batch, y_batch = self.mesh.shard(x_batch), self.mesh.shard(y_batch)
            loss, correct = train_step(self.model, self.optimizer, x_batch, y_batch)
            tally.add(loss, correct, len(batch))
            on_batch(tally.means())
        return tally.means()

    def evaluate(self, x, y, batch_size):
        y = _labels(y)
        tally = Tally()
        for start in range(0, len(x), batch_size):
            x_batch, y_batch = x[start:start + batch_size], y[start:start + batch_size]
            loss, correct = eval_step(self.model, x_batch, y_batch)
            tally.add(loss, correct, len(x_batch))
        return tally.means()

    def predict_proba(self, x):
        return np.asarray(nnx.softmax(self.model(jnp.asarray(x)), axis=-1))

    def _params(self):
        """The nnx.Param variables, in canonical order: kernel, bias, kernel, ..."""
        return [param for _, layer in self.model.weighted_layers()
                for param in (layer.kernel, layer.bias)]

    def get_weights(self):
        return layout.to_canonical(ENGINE, [np.asarray(p[...]) for p in self._params()])

    def set_weights(self, weights):
        layout.check_shapes(self._shapes, weights)
        for param, value in zip(self._params(), layout.from_canonical(ENGINE, weights)):
            param[...] = jnp.asarray(value)
        self._replicate()

    def _replicate(self):
        if self.mesh is not None:  # new values arrive on one device: spread them again
            self.mesh.replicate(self.model, self.optimizer)

    def objective_and_grads(self, batch, noise=None):
        """The parity hook: mean cross-entropy and its gradients (Keras's layout) on batch
        (x, y) at the current weights, no update. The classifier draws no noise."""
        x, y = batch
        loss, grads = loss_and_grad_step(self.model, x, _labels(y))
        paths = self._param_paths()
        flat = dict(nnx.to_flat_state(grads))
        return float(loss), layout.to_canonical(
            ENGINE, [np.asarray(flat[path].get_value()) for path in paths])

    def _param_paths(self):
        return [("net", "layers", i, name) for i, _ in self.model.weighted_layers()
                for name in ("kernel", "bias")]

    def _adam_paths(self, flat):
        return layout.optax_adam_paths(flat, self._param_paths())

    def state(self):
        flat = dict(nnx.to_flat_state(nnx.state(self.optimizer)))
        mu, nu, count = self._adam_paths(flat)
        arrays = layout.pack_adam_state(
            self.get_weights(),
            layout.to_canonical(ENGINE, [np.asarray(flat[k].get_value()) for k in mu]),
            layout.to_canonical(ENGINE, [np.asarray(flat[k].get_value()) for k in nu]),
            int(flat[count].get_value()))
        return arrays, {"format": layout.STATE_FORMAT, "engine": ENGINE}

    def load_state(self, arrays, meta):
        layout.check_state_meta(meta)
        weights, first, second, step = layout.unpack_adam_state(arrays, self._shapes)
        self.set_weights(weights)
        state = nnx.state(self.optimizer)
        flat = dict(nnx.to_flat_state(state))
        mu, nu, count = self._adam_paths(flat)
        for keys, values in ((mu, first), (nu, second)):
            for key, value in zip(keys, layout.from_canonical(ENGINE, values)):
                flat[key].set_value(jnp.asarray(value))
        # optax counts steps for its bias correction; nnx.Optimizer counts them too.
        for key in (count, ("step",)):
            if key in flat:
                old = flat[key].get_value()
                flat[key].set_value(jnp.asarray(step, dtype=old.dtype))
        nnx.update(self.optimizer, state)
        self._replicate()


def _batch_mesh(devices):
    from customfit.parallel.mesh import BatchMesh

    return BatchMesh(devices)
