"""Small cf.Model subclasses the core tests train."""

import keras
import numpy as np
from keras import ops as K

import customfit as cf


def accuracy(y, logits):
    return K.mean(K.cast(K.equal(K.argmax(logits, axis=-1), K.cast(y, "int32")), "float32"))


class ToyClassifier(cf.Model):
    """The lecture's toy classifier: Dense 10-8-5, cross-entropy on logits."""

    def __init__(self, **kwargs):  # **kwargs: Keras revives a saved model from its config
        super().__init__(**kwargs)
        self.l1 = keras.layers.Dense(10, activation="relu")
        self.l2 = keras.layers.Dense(8, activation="relu")
        self.l3 = keras.layers.Dense(5)

    def call(self, x):
        return self.l3(self.l2(self.l1(x)))

    def objective(self, data, training=True):
        x, y = data
        logits = self(x)
        loss = K.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return {"loss": loss, "accuracy": accuracy(y, logits)}


def ring(n, seed=0, modes=8, radius=2.0, spread=0.05):
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * rng.integers(0, modes, n) / modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + spread * rng.normal(size=(n, 2))).astype("float32")


class Critic(cf.Model):
    """A WGAN-GP critic between a ring of 8 Gaussians and a blob at the origin."""

    def __init__(self, penalty=10.0):
        super().__init__()
        self.penalty = penalty
        self.net = keras.Sequential(
            [
                keras.layers.Dense(64, activation="softplus"),
                keras.layers.Dense(64, activation="softplus"),
                keras.layers.Dense(1),
            ]
        )
        self.noise = keras.random.SeedGenerator(1)

    def score(self, x):
        return K.squeeze(self.net(x), -1)

    def objective(self, real, training=True):
        n = K.shape(real)[0]
        fake = 0.3 * keras.random.normal((n, 2), seed=self.noise)
        t = keras.random.uniform((n, 1), seed=self.noise)
        mixed = t * real + (1 - t) * fake
        slopes = cf.ops.grad(lambda v: K.sum(self.score(v)))(mixed)
        norms = K.sqrt(K.sum(slopes**2, axis=1) + 1e-12)
        gap = K.mean(self.score(real)) - K.mean(self.score(fake))
        loss = -gap + self.penalty * K.mean((norms - 1.0) ** 2)
        return {"loss": loss, "gap": gap, "slope": K.mean(norms)}


class TwoParts(cf.Model):
    """Two sub-models whose objectives each depend on both: only the update's own sub-model
    may move."""

    def __init__(self, repeat_a=3, **kwargs):
        super().__init__(**kwargs)
        self.a = keras.Sequential(
            [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)], name="part_a"
        )
        self.b = keras.Sequential(
            [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)], name="part_b"
        )
        self.repeat_a = repeat_a

    def get_config(self):  # keras.Model subclasses record their own arguments
        return {**super().get_config(), "repeat_a": self.repeat_a}

    def objective_a(self, data, training=True):
        x, y = data
        err = self.a(x) + self.b(x) - y
        return {"loss": K.mean(err**2), "err": K.mean(K.abs(err))}

    def objective_b(self, data, training=True):
        x, y = data
        err = self.a(x) - self.b(x) - y
        return {"loss": K.mean(err**2), "err": K.mean(K.abs(err))}

    def updates(self):
        return [
            cf.Update("a", self.objective_a, self.a, repeat=self.repeat_a),
            cf.Update("b", self.objective_b, self.b),
        ]


class FrozenMiddle(cf.Model):
    """pre -> mid (Dense + BatchNorm, frozen) -> head: pre and head learn through mid."""

    def __init__(self):
        super().__init__()
        self.pre = keras.layers.Dense(8, activation="tanh")
        self.mid = keras.Sequential(
            [keras.layers.Dense(8), keras.layers.BatchNormalization()], name="mid"
        )
        self.head = keras.layers.Dense(1)

    def objective(self, data, training=True):
        x, y = data
        with cf.frozen(self.mid):
            h = self.mid(self.pre(x), training=training)
        return K.mean((self.head(h) - y) ** 2)


class Stateful(cf.Model):
    """Batch-norm statistics, dropout and a SeedGenerator used inside the objective."""

    def __init__(self):
        super().__init__()
        self.norm = keras.layers.BatchNormalization(momentum=0.9)
        self.drop = keras.layers.Dropout(0.5)
        self.out = keras.layers.Dense(1)
        self.noise = keras.random.SeedGenerator(3)

    def objective(self, data, training=True):
        x, y = data
        x = x + 0.01 * keras.random.normal(K.shape(x), seed=self.noise)
        h = self.drop(self.norm(x, training=training), training=training)
        return {"loss": K.mean((self.out(h) - y) ** 2)}


class LinearScore(cf.Model):
    """Score matching, E[|s|^2 + 2 div s], with an affine s: for N(0, sigma^2 I) data the
    optimum is s(x) = -x / sigma^2."""

    def __init__(self, method):
        super().__init__()
        self.method = method
        self.s = keras.layers.Dense(2)
        self.probe = keras.random.SeedGenerator(5)

    def objective(self, x, training=True):
        div = cf.ops.divergence(self.s, x, method=self.method, seed=self.probe)
        return K.mean(K.sum(self.s(x) ** 2, axis=1) + 2.0 * div)


# Models for mixed precision: their float16 / bfloat16 outputs meet float32 targets only after a
# cast.


def f32(x):
    # TensorFlow's operators do not promote float16 to float32 as keras.ops do.
    return K.cast(x, "float32")


class Regressor(cf.Model):
    def __init__(
        self, factor=1.0, **kwargs
    ):  # **kwargs: Keras revives a saved model from its config
        super().__init__(**kwargs)
        self.factor = factor
        self.hidden = keras.layers.Dense(16, activation="tanh")
        self.out = keras.layers.Dense(1)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}

    def call(self, x):
        return self.out(self.hidden(x))

    def objective(self, data, training=True):
        x, y = data
        return {"loss": self.factor * K.mean((f32(self(x)) - y) ** 2)}


class Parts(cf.Model):
    """Two sub-models, each trained by its own optimizer on an objective using both."""

    def __init__(self, factor_a=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor_a = factor_a
        self.a = keras.Sequential([keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        self.b = keras.Sequential([keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])

    def get_config(self):
        return {**super().get_config(), "factor_a": self.factor_a}

    def objective_a(self, data, training=True):
        x, y = data
        return self.factor_a * K.mean((f32(self.a(x) + self.b(x)) - y) ** 2)

    def objective_b(self, data, training=True):
        x, y = data
        return K.mean((f32(self.a(x) - self.b(x)) - y) ** 2)

    def updates(self):
        return [
            cf.Update("a", self.objective_a, self.a, repeat=2),
            cf.Update("b", self.objective_b, self.b),
        ]


class PenalisedCritic(cf.Model):
    """A WGAN-GP critic's objective: the outer gradient goes through an inner one."""

    def __init__(self):
        super().__init__()
        self.net = keras.Sequential(
            [keras.layers.Dense(16, activation="softplus"), keras.layers.Dense(1)]
        )

    def score(self, x):
        return f32(K.squeeze(self.net(x), -1))

    def objective(self, real, training=True):
        # Fakes without random draws, so that a step retaken after an overflow sees the same.
        fake = 0.3 * K.flip(real, axis=0)
        slopes = cf.ops.grad(lambda v: K.sum(self.score(v)))(0.5 * (real + fake))
        norms = K.sqrt(K.sum(slopes**2, axis=1) + 1e-12)
        return (
            K.mean(self.score(fake)) - K.mean(self.score(real)) + 10.0 * K.mean((norms - 1.0) ** 2)
        )


class Score(cf.Model):
    """Score matching, E[|s|^2 + 2 div s]: the outer gradient goes through a divergence."""

    def __init__(self):
        super().__init__()
        self.net = keras.Sequential(
            [keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)]
        )

    def objective(self, x, training=True):
        div = cf.ops.divergence(lambda v: f32(self.net(v)), x, method="exact")
        return K.mean(K.sum(f32(self.net(x)) ** 2, axis=1) + 2.0 * div)
