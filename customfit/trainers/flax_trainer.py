"""What every family's Flax NNX Trainer needs besides its networks, losses and steps, written once.

A family's engine file (customfit/tasks/<family>/with_flax.py) holds the nnx.Modules, the losses,
the @nnx.jit steps and the epoch loop; its Trainer subclasses FlaxTrainer and, once its models and
optimizers are built, hands them to `keep`: where its canonical arrays live (`Group`s) and how its
layout.py checks, packs and unpacks them (a `Codec`). From that, FlaxTrainer gives the workbench
the rest:

- several devices: models and optimizers replicated over a jax.sharding mesh, each batch sharded
  along it (customfit/parallel/mesh.py); the jitted step is the same function on one device;
- --precision mixed: dense and convolution layers computing in bfloat16 (customfit/precision.py);
- batches: an epoch's NumPy permutation (a JAX program has no reason to import TensorFlow);
- the canonical layout: weights and gradients (the parity hook) as NumPy arrays in canonical order,
  and Adam's moments and step counts as named arrays for a checkpoint;
- batch statistics left as they were where a network runs in training mode but is not trained
  (`frozen_statistics`: a GAN's other network, the parity hook);
- initial weights made quickly (`FlaxTrainer.initialized`): every initializer in one XLA program.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from customfit import precision
from customfit.devices import epoch_order
from customfit.parallel.mesh import BatchMesh
from customfit.trainers import canonical
from customfit.trainers.running_means import RunningMeans

__all__ = [
    "Codec",
    "FlaxTrainer",
    "RunningMeans",
    "adam",
    "frozen_statistics",
    "kernels_and_biases",
    "value_and_grads",
]


# XLA's optimization level for a program of initializers (FlaxTrainer.initialized).
QUICK_COMPILE = {"xla_backend_optimization_level": 1}


@functools.cache
def adam(lr, beta_1, beta_2, epsilon, decay_steps=None):
    """optax's Adam, its learning rate on a cosine decay to 0 over `decay_steps` updates if given.
    Stateless (each nnx.Optimizer keeps its own moments), so one object serves every Trainer of
    the same settings, and nnx.jit reuses for a second Trainer the steps it compiled for the
    first (the optimizer's transformation is part of what nnx.jit traces)."""
    rate = optax.cosine_decay_schedule(lr, decay_steps) if decay_steps else lr
    return optax.adam(rate, b1=beta_1, b2=beta_2, eps=epsilon)


@contextlib.contextmanager
def frozen_statistics(network):
    """`network` in training mode (batch statistics) with its running statistics left as they
    were: a clone taken on the way in is put back on the way out."""
    saved = nnx.clone(nnx.state(network, nnx.BatchStat))
    try:
        yield network
    finally:
        nnx.update(network, saved)


def objective(loss, *args, **options):
    """loss(*args, **options), or its "loss" where it returns a family's figures (a dict)."""
    value = loss(*args, **options)
    return value["loss"] if isinstance(value, dict) else value


@functools.partial(nnx.jit, static_argnames=("loss", "options"))
def value_and_grads(loss, model, *args, options=()):
    """The objective of loss(model, *args, **dict(options)) and its gradients with respect to
    model's nnx.Params (the parity hook's), with nothing moved: every module among the arguments
    gets its batch statistics back. `options`: (name, value) pairs, static (a method's name, say).
    """
    modules = [m for m in (model, *args) if isinstance(m, nnx.Module)]
    saved = [nnx.clone(nnx.state(m, nnx.BatchStat)) for m in modules]
    value_of = functools.partial(objective, loss, **dict(options))
    value, grads = nnx.value_and_grad(value_of)(model, *args)
    for module, statistics in zip(modules, saved):
        nnx.update(module, statistics)
    return value, grads


@dataclasses.dataclass(frozen=True)
class Group:
    """One group of canonical arrays (a network's, say): the module holding them, the path of each
    in the module's state (parameters and batch statistics alike), in canonical order, the paths
    of the trained ones (their gradients and Adam moments), and the optimizer that trains them."""

    module: nnx.Module
    paths: list
    trained: list
    optimizer: nnx.Optimizer


@dataclasses.dataclass(frozen=True)
class Codec:
    """The family's layout.py as FlaxTrainer uses it, every array canonical and shaped as
    get_weights hands it out (by group, or alone for a family of one group); `steps`: one count
    where one optimizer trains every group, else {group: count}.

    check(weights): raise ValueError unless the names and shapes are the family's;
    pack(weights, first, second, steps): the checkpoint's named arrays (Adam's two moments);
    unpack(arrays, meta): (weights, first, second, steps), every name and shape checked;
    meta: the checkpoint's meta (format, engine, the family's settings)."""

    check: Callable
    pack: Callable
    unpack: Callable
    meta: dict


def kernels_and_biases(layers, within=()):
    """The paths of each layer's kernel then its bias, layer by layer: the canonical order of a
    network of nnx.Linear, nnx.Conv and nnx.ConvTranspose layers (Flax stores their kernels as
    Keras does). `layers`: the layers' names or paths in the module at path `within`."""
    paths = [(*within, *(layer if isinstance(layer, tuple) else (layer,))) for layer in layers]
    return [(*path, kind) for path in paths for kind in ("kernel", "bias")]


def read(tree, paths):
    """Float32 NumPy copies of the arrays at `paths` of an nnx.State (weights, gradients)."""
    flat = dict(nnx.to_flat_state(tree))
    return [np.array(flat[path].get_value(), dtype=np.float32) for path in paths]


def write(target, values):
    """Set the variables of `target` (an nnx.Module or nnx.Optimizer) at the given paths, each
    in the dtype it has: {path: array}."""
    state = nnx.state(target)
    flat = dict(nnx.to_flat_state(state))
    for path, value in values.items():
        flat[path].set_value(jnp.asarray(value, dtype=flat[path].get_value().dtype))
    nnx.update(target, state)


def adam_paths(flat, trained):
    """(first-moment paths, second-moment paths, step-count paths) in an nnx.Optimizer's flat
    state. Found by name rather than by position, so that the optax chain's structure need not be
    assumed; anything but exactly one moment per parameter is an error. Adam's bias correction,
    a learning-rate schedule and nnx.Optimizer each count steps: all of them are step counts."""

    def find(name, path):
        found = [key for key in flat if key[-len(path) - 1 :] == (name, *path)]
        if len(found) != 1:
            raise RuntimeError(f"no single optax entry {name} for {path}: {list(flat)}")
        return found[0]

    counts = [key for key in flat if key[-1] in ("count", "step")]
    if ("step",) not in counts:
        raise RuntimeError(f"no nnx.Optimizer step count in {list(flat)}")
    return [find("mu", p) for p in trained], [find("nu", p) for p in trained], counts


def canonical_codec(shapes, engine):
    """The Codec of a family of one list of arrays in customfit/trainers/canonical.py's layout
    (the classifier's), of the given shapes."""

    def unpack(arrays, meta):
        canonical.check_state_meta(meta)
        return canonical.unpack_adam_state(arrays, shapes)

    return Codec(
        check=functools.partial(canonical.check_shapes, shapes),
        pack=canonical.pack_adam_state,
        unpack=unpack,
        meta={"format": canonical.STATE_FORMAT, "engine": engine},
    )


class FlaxTrainer:
    """The base of every family's Flax NNX Trainer (see the module's docstring).

    Arrays cross the Trainer's boundary in the family's canonical layout: {group: arrays} for a
    family of several groups (a GAN's generator and discriminator), the arrays alone for a family
    of one group (a classifier)."""

    def __init__(self, devices=1):
        # On several devices the step is the same jitted function: jit compiles one program for
        # the global batch and XLA inserts the all-reduces (customfit/parallel/mesh.py).
        self.mesh = None if devices == 1 else BatchMesh(devices)
        self.placed = ()

    @staticmethod
    def initialized(build, seed):
        """`build(nnx.Rngs(seed))`: the networks it returns, with the same initial weights, bit for
        bit, as when their initializers run one by one, built in one program that XLA compiles at
        optimization level 1. At its default level (3), XLA spends seconds compiling the
        random-number hashing of a single initializer (a 4x4x32x16 Glorot kernel on this 2-core
        CPU: 2.7 s alone, 17 s beside other work; at level 1: 0.2 s): integer arithmetic, and
        float steps that no level may reorder."""
        graph, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(seed))))
        make = jax.jit(lambda: nnx.state(build(nnx.Rngs(seed))), compiler_options=QUICK_COMPILE)
        return nnx.merge(graph, make())

    def place(self, *objects):
        """The family's models and optimizers, once built: under --precision mixed the models'
        layers compute in bfloat16 (float32 parameters); on several devices all are replicated."""
        for obj in objects:
            if isinstance(obj, nnx.Module):
                precision.compute_in(obj)
        self.placed = objects
        self.replicate()

    def replicate(self):
        if self.mesh is not None:  # new values arrive on one device: spread them again
            self.mesh.replicate(*self.placed)

    # ---- batches

    def epoch_batches(self, arrays, batch_size, shuffle_seed):
        """One epoch's batches (tuples of `arrays`' rows) in a NumPy permutation of the samples;
        on N devices only the first multiple of N samples, each batch sharded along the mesh."""
        order = np.random.default_rng(shuffle_seed).permutation(len(arrays[0]))
        if self.mesh is not None:
            order = epoch_order(order, self.mesh.devices)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tuple(a[rows] for a in arrays)
            yield batch if self.mesh is None else tuple(self.mesh.shard(b) for b in batch)

    @staticmethod
    def held_out_batches(arrays, batch_size):
        """The held-out arrays in order, batch by batch (tuples of rows)."""
        for start in range(0, len(arrays[0]), batch_size):
            yield tuple(a[start : start + batch_size] for a in arrays)

    def held_out_means(self, arrays, batch_size, names, figures):
        """Running means of the figures `figures(*batch)` gives ({name: batch mean}) over the
        held-out arrays, batch by batch."""
        means = RunningMeans(names)
        for batch in self.held_out_batches(arrays, batch_size):
            means.add_all(figures(*batch), len(batch[0]))
        return means.means()

    # ---- the canonical layout

    def keep(self, networks, paths, codec):
        """Where the family's canonical arrays live, in the layout's order: networks {group:
        (module, optimizer)}; paths {group: (paths, trained paths)} in the modules' states, or
        {group: paths} where every array is trained; the layout's Codec (or its fields). The
        modules and optimizers are placed (`place`)."""
        modules = {id(m): m for m, _ in networks.values()}
        optimizers = {id(o): o for _, o in networks.values()}
        self.place(*modules.values(), *optimizers.values())
        self.groups = {}
        for name, (module, optimizer) in networks.items():
            every, trained = paths[name] if isinstance(paths[name], tuple) else (paths[name],) * 2
            self.groups[name] = Group(module, every, trained, optimizer)
        self.codec = codec if isinstance(codec, Codec) else Codec(**codec)

    def bare(self, by_group):
        """{group: value} as the family hands it out: the value alone for a family of one."""
        return next(iter(by_group.values())) if len(by_group) == 1 else by_group

    def by_group(self, value):
        """bare's inverse: {group: value}."""
        names = list(self.groups)
        return {names[0]: value} if len(names) == 1 else value

    def get_weights(self):
        return self.bare(
            {name: read(nnx.state(g.module), g.paths) for name, g in self.groups.items()}
        )

    def set_weights(self, weights):
        self.codec.check(weights)
        weights = self.by_group(weights)
        for name, g in self.groups.items():
            write(g.module, dict(zip(g.paths, weights[name], strict=True)))
        self.replicate()

    def canonical_grads(self, grads, name=None):
        """nnx.value_and_grad's gradients (an nnx.State) in canonical order: group `name`'s, or
        every group's, shaped as get_weights's arrays."""
        if name is not None:
            return read(grads, self.groups[name].trained)
        return self.bare({n: read(grads, g.trained) for n, g in self.groups.items()})

    def parity(self, loss, *args, group=None, options=()):
        """The parity hook's answer for loss(*args): (value, canonical gradients of `group`, or
        of every group), nothing moved (value_and_grads)."""
        value, grads = value_and_grads(loss, *args, options=tuple(options))
        return float(value), self.canonical_grads(grads, group)

    def shared_optimizer(self):
        """Whether one optimizer trains every group (then one step count stands for all)."""
        return len({id(g.optimizer) for g in self.groups.values()}) == 1

    def state(self):
        first, second, steps = {}, {}, {}
        for name, g in self.groups.items():
            tree = nnx.state(g.optimizer)
            flat = dict(nnx.to_flat_state(tree))
            mu, nu, _ = adam_paths(flat, g.trained)
            first[name], second[name] = read(tree, mu), read(tree, nu)
            steps[name] = int(flat[("step",)].get_value())
        steps = next(iter(steps.values())) if self.shared_optimizer() else steps
        packed = self.codec.pack(self.get_weights(), self.bare(first), self.bare(second), steps)
        return packed, dict(self.codec.meta)

    def load_state(self, arrays, meta):
        weights, first, second, steps = self.codec.unpack(arrays, meta)
        self.set_weights(weights)
        first, second = self.by_group(first), self.by_group(second)
        if self.shared_optimizer():
            steps = dict.fromkeys(self.groups, steps)
        for name, g in self.groups.items():
            flat = dict(nnx.to_flat_state(nnx.state(g.optimizer)))
            mu, nu, counts = adam_paths(flat, g.trained)
            write(
                g.optimizer,
                {
                    **dict(zip(mu, first[name], strict=True)),
                    **dict(zip(nu, second[name], strict=True)),
                    **dict.fromkeys(counts, steps[name]),
                },
            )
        self.replicate()
