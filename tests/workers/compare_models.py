"""cf.Models whose numbers are known to differ between Keras backends, for tests/test_compare.py
(`customfit compare tests/workers/compare_models.py:FACTORY`)."""

from keras import ops

import customfit as cf


class Kinks(cf.Model):
    """Two kinks where the backends choose other subgradients:
    - sum |w| at w = 0: JAX's abs has gradient 1 at 0 (so has the float64 reference, Keras on
      JAX), torch's and TensorFlow's 0;
    - sum clip(c, 0, 1) at c = 0: JAX's clip is a max then a min, and at the bound its gradient
      splits (1/2), torch's clamp and TensorFlow's clip_by_value pass it whole (1).
    v stays clear of kinks: its gradient is the same everywhere."""

    def __init__(self):
        super().__init__()
        self.w = self.add_weight(shape=(3,), initializer="zeros", name="w")
        self.c = self.add_weight(shape=(2,), initializer="zeros", name="c")
        self.v = self.add_weight(shape=(2, 1), initializer="ones", name="v")

    def objective(self, data, training=True):
        fit = ops.mean(ops.square(data @ self.v - 1.0))
        kinks = ops.sum(ops.abs(self.w)) + ops.sum(ops.clip(self.c, 0.0, 1.0))
        return {"loss": kinks + fit, "fit": fit}


class Ties(cf.Model):
    """sum max(m, 0) at m = 0: at a tie JAX and torch split the gradient (1/2 to each side),
    TensorFlow gives it all to the first argument (1)."""

    def __init__(self):
        super().__init__()
        self.m = self.add_weight(shape=(2,), initializer="zeros", name="m")

    def objective(self, data, training=True):
        return ops.sum(ops.maximum(self.m, 0.0)) + 0.0 * ops.mean(data)


class NotAModel:
    pass


def kinks():
    return Kinks()


def ties():
    return Ties()


def not_a_model():
    return NotAModel()
