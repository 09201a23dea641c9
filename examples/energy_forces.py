"""
Title: An energy model trained on forces
Author: customfit
Description: Learn the potential energy of a small cluster of atoms from the forces on them
    alone: the model predicts an energy, and its forces are minus the energy's gradient with
    respect to the atoms' positions.
Shows: `cf.ops.grad` with respect to an input inside the objective; the training step then
    differentiates that gradient again with respect to the weights (second order, every backend).
Run: KERAS_BACKEND=jax python examples/energy_forces.py   (tensorflow and torch too;
    CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import itertools
import os

import keras
import numpy as np
from keras import ops

import customfit as cf

QUICK = os.environ.get("CUSTOMFIT_QUICK") == "1"
keras.utils.set_random_seed(0)

"""
## Data: four atoms in the plane, bound by Morse pair potentials

Configurations are jiggled around a square of side 1; the forces are the exact minus gradient of
the true energy. The model never sees an energy.
"""

ATOMS = 4
PAIRS = np.array(list(itertools.combinations(range(ATOMS), 2)))


def morse_energy_and_forces(positions, depth=1.0, width=2.0, r0=1.0):
    delta = positions[:, PAIRS[:, 0]] - positions[:, PAIRS[:, 1]]  # (n, pairs, 2)
    r = np.linalg.norm(delta, axis=-1)
    e = np.exp(-width * (r - r0))
    energy = np.sum(depth * (1.0 - e) ** 2, axis=1)
    pull = (2.0 * depth * width * (1.0 - e) * e / r)[..., None] * delta  # dE/d(position of first)
    forces = np.zeros_like(positions)
    np.add.at(forces, (slice(None), PAIRS[:, 0]), -pull)
    np.add.at(forces, (slice(None), PAIRS[:, 1]), pull)
    return energy, forces


rng = np.random.default_rng(0)
square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
positions = (square + 0.15 * rng.normal(size=(5000, ATOMS, 2))).astype("float32")
energy, forces = morse_energy_and_forces(positions)
forces = forces.astype("float32")
train, test = slice(0, 4000), slice(4000, None)

"""
## The model

The energy is a sum over pairs of one learned function of the pair's distance, so it does not
change when the cluster moves or turns. The objective asks `cf.ops.grad` for the energy's
gradient with respect to the positions and compares minus that with the given forces.
"""


class PairEnergy(cf.Model):
    def __init__(self):
        super().__init__()
        self.pair = keras.Sequential(
            [
                keras.layers.Dense(64, activation="tanh"),
                keras.layers.Dense(64, activation="tanh"),
                keras.layers.Dense(1),
            ]
        )

    def call(self, positions):
        first = ops.take(positions, PAIRS[:, 0], axis=1)
        second = ops.take(positions, PAIRS[:, 1], axis=1)
        r = ops.sqrt(ops.sum(ops.square(first - second), axis=-1, keepdims=True) + 1e-12)
        return ops.sum(self.pair(r), axis=(1, 2))  # (batch,)

    def objective(self, data, training=True):
        positions, forces = data
        predicted = -cf.ops.grad(lambda p: ops.sum(self(p)))(positions)
        error = predicted - forces
        return {"loss": ops.mean(ops.square(error)), "force_mae": ops.mean(ops.abs(error))}


model = PairEnergy()
model.compile(optimizer=keras.optimizers.Adam(3e-3))
if QUICK:  # a brief run: 640 configurations, five epochs
    train = slice(0, 640)
epochs, verbose = (5, 0) if QUICK else (40, 2)
model.fit(positions[train], forces[train], epochs=epochs, batch_size=64, verbose=verbose)

"""
## The result

On held-out configurations: the forces' error relative to their spread, and how well the
learned energy (known only up to a constant) follows the true one.
"""

held_out = model.evaluate(positions[test], forces[test], return_dict=True, verbose=0)
relative = float(np.sqrt(held_out["loss"]) / forces[test].std())
learned = ops.convert_to_numpy(model.predict(positions[test], verbose=0))
correlation = float(np.corrcoef(learned, energy[test])[0, 1])
print(
    f"held-out force error {relative:.4f} of the forces' spread; energy correlation "
    f"{correlation:.4f}"
)
bar = (0.9, 0.5) if QUICK else (0.05, 0.999)
assert relative < bar[0] and correlation > bar[1], (
    f"{relative:.4f}, {correlation:.4f}: short of {bar}"
)
