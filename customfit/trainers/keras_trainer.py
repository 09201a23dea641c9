"""What every family's Keras Trainer does alike (the keras-tensorflow, keras-torch and keras-jax
engines), written once.

A family's with_keras.py holds what keras-io's "customizing what happens in fit()" holds: the
networks, the cf.Model with its objective, compile() and fit(). Its Trainer subclasses
KerasTrainer for the rest: an epoch of fit() that is a function of its seed, on one device or
several (customfit/parallel/keras_fit.py), the figures in the native engines' order, the parity
hook's gradients read out without touching a variable, and Adam's moments as arrays for a
checkpoint (found by customfit/trainers/keras_adam.py; a LossScaleOptimizer's scale is kept by
customfit/loss_scale_state.py, which finds it on the Trainer).

The canonical weight layout is Keras's own (customfit/trainers/canonical.py), so a Keras model's
get_weights() and set_weights() already speak it.
"""

import sys

import keras
import numpy as np
from keras import ops as K
from keras.src.utils import module_utils

import customfit as cf
from customfit.parallel.keras_fit import DataParallel
from customfit.trainers.keras_adam import adam_slots_for


def to_numpy(value):
    """A NumPy copy of a tensor (a view would change as training goes on)."""
    return np.array(K.convert_to_numpy(value), copy=True)


def float32(h):
    """--precision mixed computes in bfloat16 or float16 (Keras's dtype policy, set by
    customfit/precision.py); what leaves a network, for the losses and the judge, is float32."""
    return K.cast(h, "float32")


def tensor(array, dtype="float32"):
    return K.convert_to_tensor(np.asarray(array, dtype))


def set_random_seed(seed):
    """keras.utils.set_random_seed(seed), without importing TensorFlow on the jax and torch
    backends only to seed it. Keras seeds TensorFlow wherever it is installed, for tf.data
    pipelines; a keras-torch or keras-jax run has none (fit_epoch draws the order of its batches
    from NumPy), and importing TensorFlow only to seed it cost each such run 1.6 s of CPU where
    Keras was imported already, 2.4 s in a fresh process (a one-epoch keras-torch toy run: 6.6 s
    against 9.2; 2026-12-07). Where TensorFlow is imported already, or is the backend, Keras
    seeds it as always."""
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    lazy = module_utils.tensorflow  # what Keras's set_random_seed asks whether TF is there
    known = lazy._available
    lazy._available = False
    try:
        keras.utils.set_random_seed(seed)
    finally:
        lazy._available = known


def reseed(generator, seed):
    """Set a keras.random.SeedGenerator's state from `seed`: what it draws next is a function of
    `seed` alone (an epoch's noise, of the run's seed and the epoch), so a resumed run draws what
    an uninterrupted one drew."""
    state = generator.state
    state.assign(np.asarray([seed, 0], dtype=state.dtype))


def in_order(figures, names=None):
    """The figures as floats; Keras hands an objective's dict back sorted by name, `names` gives
    the native engines' order (None: as they come)."""
    return {k: float(figures[k]) for k in (figures if names is None else names)}


class Progress(keras.callbacks.Callback):
    """Hands on_batch each batch's figures (fit()'s running means over the epoch so far)."""

    def __init__(self, on_batch, names=None):
        super().__init__()
        self.on_batch, self.names = on_batch, names

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch(in_order(logs or {}, self.names))


def stateless_value_and_grads(loss, trainable, variables=None, jit=False):
    """A function (values, *args) -> (loss(*args), its gradients over `trainable`), with every
    variable of `variables` (default: `trainable`) read from `values`, in that order, through a
    keras.StatelessScope: nothing is written to a variable (the batch-norm statistics a training
    step would move stay as they are). jit: on JAX, compiled with the values as arguments rather
    than baked-in constants."""
    variables = trainable if variables is None else variables
    where = {id(v): i for i, v in enumerate(variables)}
    learned = {id(p) for p in trainable}

    def value_and_grads(values, *args):
        others = [(v, a) for v, a in zip(variables, values) if id(v) not in learned]

        def loss_of(*own):
            with keras.StatelessScope(state_mapping=others + list(zip(trainable, own))):
                return loss(*args)

        return cf.ops.value_and_grad(loss_of, argnums=tuple(range(len(trainable))))(
            *[values[where[id(p)]] for p in trainable]
        )

    if jit and keras.backend.backend() == "jax":
        import jax

        return jax.jit(value_and_grads)
    return value_and_grads


class KerasTrainer:
    """The base of every family's Keras Trainer. A subclass builds and compiles its cf.Model,
    as self.model, in self.parallel.scope(), and may set figure_names (its figures in the native
    engines' order)."""

    figure_names = None

    def __init__(self, seed, devices=1):
        self.engine, self.seed = f"keras-{keras.backend.backend()}", seed
        # One device, or the backend's own data parallelism (customfit/parallel/keras_fit.py).
        self.parallel = DataParallel(devices)
        set_random_seed(seed)

    @staticmethod
    def trainable_of(model, *networks):
        """The networks' trainable variables, one network after another: the model's own, in
        that order (checked), which is the order its optimizer keeps its slots in."""
        variables = [v for network in networks for v in network.trainable_variables]
        if [id(v) for v in variables] != [id(v) for v in model.trainable_variables]:
            names = " then ".join(f"{network.name}'s" for network in networks)
            raise RuntimeError(f"the model's trainable variables are not {names}")
        return variables

    def fit_epoch(self, model, arrays, batch_size, shuffle_seed, on_batch):
        """One epoch of model.fit() over `arrays` (x, or x and y), in the order of a permutation
        drawn from shuffle_seed: fit() would shuffle from Keras's global random state, and this
        makes an epoch's batches a function of the seed alone, so a resumed run repeats them.
        On several devices each fits its share, and the figures are means over all of them."""
        order = self.parallel.epoch_order(
            np.random.default_rng(shuffle_seed).permutation(len(arrays[0])), batch_size
        )
        with self.parallel.scope():
            history = model.fit(
                *[a[order] for a in arrays],
                batch_size=self.parallel.batch_size(batch_size),
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[Progress(on_batch, self.figure_names)],
            )
        last = {k: float(v[-1]) for k, v in history.history.items()}
        return in_order(self.parallel.means_over_devices(last), self.figure_names)

    def evaluate_model(self, model, arrays, batch_size):
        figures = model.evaluate(*arrays, batch_size=batch_size, verbose=0, return_dict=True)
        return in_order(figures, self.figure_names)

    def train_epoch(self, x, batch_size, shuffle_seed, on_batch):
        """An epoch of fit() over x, the model's noise (its SeedGenerator `noise`) reseeded from
        the epoch's seed; a family that fits other arrays or draws otherwise says its own."""
        reseed(self.model.noise, shuffle_seed)
        return self.fit_epoch(self.model, (x,), batch_size, shuffle_seed, on_batch)

    def evaluate(self, x, batch_size):
        reseed(self.model.noise, self.seed)  # the same held-out draws at every call
        return self.evaluate_model(self.model, (x,), batch_size)

    @staticmethod
    def value_and_grads(loss, trainable, *args):
        """The parity hook's numbers: loss(*args) and its gradients over the variables
        `trainable`, at their current values, nothing updated; as a float and NumPy arrays."""
        value, grads = stateless_value_and_grads(loss, trainable)(
            [v.value for v in trainable], *args
        )
        return float(to_numpy(value)), [to_numpy(g) for g in grads]

    @staticmethod
    def adam_state(optimizer, built_for, wanted=None):
        """(first moments, second moments, step) of a Keras Adam as NumPy arrays and an int, one
        moment per variable of `wanted` (default: built_for, those it was built for)."""
        momentums, velocities = adam_slots_for(optimizer, built_for, wanted or built_for)
        return (
            [to_numpy(m.value) for m in momentums],
            [to_numpy(v.value) for v in velocities],
            int(to_numpy(optimizer.iterations.value)),
        )

    @staticmethod
    def load_adam_state(optimizer, built_for, first, second, step, wanted=None):
        """adam_state's inverse: the moments and the step count assigned."""
        momentums, velocities = adam_slots_for(optimizer, built_for, wanted or built_for)
        for variable, value in zip(momentums + velocities, list(first) + list(second)):
            variable.assign(value)
        optimizer.iterations.assign(step)
