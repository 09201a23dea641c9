"""
Title: Robust regression with your own loss and metrics
Author: customfit
Description: Fit a curve through data of which one point in ten is an outlier, with a Cauchy
    loss written in keras.ops, and report your own metrics beside it.
Shows: `cf.Model.objective` returning a dict: "loss" is minimized, every other entry is a
    metric that fit() and evaluate() track, show and return.
Run: KERAS_BACKEND=jax python examples/robust_regression.py   (tensorflow and torch too;
    CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import os

import keras
import numpy as np
from keras import ops

import customfit as cf

QUICK = os.environ.get("CUSTOMFIT_QUICK") == "1"
keras.utils.set_random_seed(0)

"""
## Data

A smooth curve with a little noise; one point in ten is replaced by a gross error. Mean squared
error lets those points pull the fit towards them; a Cauchy loss grows only logarithmically in
the residual, so they barely count.
"""


def curve(x):
    return np.sin(3.0 * x) + 0.5 * x


rng = np.random.default_rng(0)
x = rng.uniform(-2.0, 2.0, size=(2000, 1)).astype("float32")
y = curve(x) + 0.05 * rng.normal(size=x.shape)
outliers = rng.random(len(x)) < 0.1
y[outliers] = rng.uniform(-6.0, 6.0, size=(outliers.sum(), 1))
y = y.astype("float32")

"""
## The model: a network and its objective

`objective(data)` gets the batch as fit() got it, here `(x, y)`. It returns the Cauchy loss
and two metrics of our own: the mean absolute residual and the share of points the fit treats as
inliers (residual below three scales).
"""


class RobustRegressor(cf.Model):
    def __init__(self, scale=0.1):
        super().__init__()
        self.scale = scale
        self.net = keras.Sequential(
            [
                keras.layers.Dense(64, activation="tanh"),
                keras.layers.Dense(64, activation="tanh"),
                keras.layers.Dense(1),
            ]
        )

    def call(self, x, training=False):
        return self.net(x, training=training)

    def objective(self, data, training=True):
        x, y = data
        residual = self(x, training=training) - y
        cauchy = ops.log1p(ops.square(residual / self.scale))
        return {
            "loss": ops.mean(cauchy),
            "mae": ops.mean(ops.abs(residual)),
            "inliers": ops.mean(ops.cast(ops.abs(residual) < 3 * self.scale, "float32")),
        }


"""
## Training
"""

model = RobustRegressor()
model.compile(optimizer=keras.optimizers.Adam(3e-3))
n = 640 if QUICK else len(x)  # a brief run: a third of the data, four epochs
history = model.fit(
    x[:n], y[:n], epochs=4 if QUICK else 150, batch_size=64, verbose=0 if QUICK else 2
)
print({k: round(v[-1], 4) for k, v in history.history.items()})

"""
## The result

The fit is judged against the clean curve, which it never saw: the mean absolute error on a
grid over the data's range.
"""

grid = np.linspace(-2.0, 2.0, 401, dtype="float32")[:, None]
error = float(np.mean(np.abs(model.predict(grid, verbose=0) - curve(grid))))
bar = 0.7 if QUICK else 0.05
print(f"mean absolute error to the clean curve: {error:.4f} (bar < {bar})")
assert error < bar, f"mean absolute error {error:.4f} is not below {bar}"
