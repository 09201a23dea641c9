"""Two small compiled cf.Models (one optimizer; two, as an OptimizerGroup), their data, and
what the saving and callback tests compare."""

import keras
import numpy as np
from conftest import to_numpy
from models import ToyClassifier, TwoParts

CUSTOM = {"ToyClassifier": ToyClassifier, "TwoParts": TwoParts}
RNG = np.random.default_rng(7)
X = RNG.normal(size=(96, 2)).astype("float32")
LABELS = (np.digitize(np.arctan2(X[:, 1], X[:, 0]), np.linspace(-np.pi, np.pi, 6)[1:-1])).astype(
    "int64"
)
TARGETS = np.sin(X.sum(axis=1, keepdims=True)).astype("float32")


def make(kind, momentum=0.9, sgd_only=False, lr_scale=1.0):
    """A compiled model and its training data: one optimizer, or two (an OptimizerGroup).
    `sgd_only` trains with SGD where Adam would be (a step linear in the gradient), at
    `lr_scale` times the learning rates."""

    def adam(lr):
        if sgd_only:
            return keras.optimizers.SGD(10 * lr * lr_scale, momentum=momentum)
        return keras.optimizers.Adam(lr * lr_scale)

    if kind == "one":
        model = ToyClassifier()
        model.compile(optimizer=adam(1e-2))
        return model, (X, LABELS)
    model = TwoParts(repeat_a=2)
    model.compile(
        optimizer={
            "b": keras.optimizers.SGD(2e-2 * lr_scale, momentum=momentum),
            "a": adam(1e-2),
        }
    )
    return model, (X, TARGETS)


def fit(model, data, epochs=1, **kwargs):
    return model.fit(*data, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)


def outputs(model, kind):
    if kind == "one":
        return model.predict(X, verbose=0)
    return np.concatenate([to_numpy(model.a(X)), to_numpy(model.b(X))], axis=1)


def state(model):
    """Every number a resumed run needs: weights, then every optimizer variable (slots, steps),
    in order (their names hold Keras's automatic numbering, which differs between instances)."""
    return [(v.path, to_numpy(v.value)) for v in model.weights + model.optimizer.variables]


def assert_same_state(a, b, atol=0.0):
    sa, sb = state(a), state(b)
    assert [v.shape for _, v in sa] == [v.shape for _, v in sb]
    assert len(sa) > 8
    for (path, va), (_, vb) in zip(sa, sb):
        np.testing.assert_allclose(vb, va, atol=atol, rtol=0, err_msg=path)
