"""
Title: The Forward-Forward algorithm
keras-io: examples/vision/forwardforward.py (https://keras.io/examples/vision/forwardforward/)
Description: Hinton's Forward-Forward algorithm (2022) on MNIST: no gradient passes from one
    layer to another; each dense layer learns by its own local goal, a high "goodness" (the mean
    square of its activities) for an image shown with its right label and a low one for the
    same image shown with a wrong label.
Shows: `updates()` returning one `cf.Update` per layer, each with its own optimizer
    (`compile(optimizer={...})`), each minimizing a loss that reads only that layer's output.
Result: held-out accuracy on MNIST of the label of highest total goodness, >= 0.93; keras-io
    reports 97.64% (784-500-500, full-batch, 250 epochs of 50 steps per layer); Hinton reports a
    test error of 1.36% with four hidden layers of 2000 units.
Run: KERAS_BACKEND=jax python examples/keras_io/forward_forward.py   (tensorflow and torch
    too; CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import keras
import numpy as np
from keras import layers, ops

import customfit as cf
import gallery

"""
## Showing a label with an image

MNIST's first ten pixels (the top row's left end) are always black: the label is written
there, one-hot, at the image's brightest value. A positive example is an image with its own
label; a negative one is the same image with any other label.
"""


def with_label(x, label):
    x = ops.reshape(x, (ops.shape(x)[0], -1))
    marks = ops.one_hot(label, 10) * ops.max(x, axis=1, keepdims=True)
    return ops.concatenate([marks, x[:, 10:]], axis=1)


"""
## The network: dense layers, each with its own goal

Each layer normalizes its input to unit length (so that the goodness of the layer below,
its length, cannot be read off directly), then applies a dense layer and a ReLU. Its goodness
is the mean square of its outputs; its loss pushes the goodness of positive examples above a
threshold and that of negative ones below it (a softplus of the margin). Each layer's update
reads the layer below's output with `stop_gradient`: the learning is local.
"""


class FFNetwork(cf.Model):
    def __init__(self, units=(400, 400), threshold=1.5, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [
            layers.Dense(n, activation="relu", name=f"ff{i}") for i, n in enumerate(units)
        ]
        self.threshold = threshold
        self.seed = keras.random.SeedGenerator(0)

    def activities(self, h, depth=None):
        """The outputs of the first `depth` layers, each fed the normalized, stopped output of
        the one below."""
        outputs = []
        for block in self.blocks[:depth]:
            h = block(h / (ops.norm(h, axis=1, keepdims=True) + 1e-4))
            outputs.append(h)
            h = ops.stop_gradient(h)
        return outputs

    def layer_objective(self, i):
        def objective(data, training=True):
            x, y = data
            wrong = (y + keras.random.randint(ops.shape(y), 1, 10, seed=self.seed)) % 10
            good_pos = ops.mean(ops.square(self.activities(with_label(x, y), i + 1)[i]), axis=1)
            good_neg = ops.mean(ops.square(self.activities(with_label(x, wrong), i + 1)[i]), axis=1)
            margins = ops.concatenate([self.threshold - good_pos, good_neg - self.threshold], 0)
            return ops.mean(ops.softplus(margins))

        return objective

    def updates(self):
        return [cf.Update(f"ff{i}", self.layer_objective(i), b) for i, b in enumerate(self.blocks)]

    def call(self, x, training=False):
        """The total goodness of every label, (batch, 10): the prediction is its argmax."""
        goodness = []
        for label in range(10):
            shown = with_label(x, ops.full((ops.shape(x)[0],), label, "int32"))
            goodness.append(sum(ops.mean(ops.square(h), axis=1) for h in self.activities(shown)))
        return ops.stack(goodness, axis=1)


def make_model():
    keras.utils.set_random_seed(0)
    model = FFNetwork()
    model.compile(optimizer={f"ff{i}": keras.optimizers.Adam(0.03) for i in range(2)})
    return model


def example_batch():
    return gallery.random_labelled_digits()


if __name__ == "__main__":
    """
    ## Data: MNIST
    """

    (x_train, y_train), (x_test, y_test) = gallery.cut_for_brief_run(gallery.mnist())

    """
    ## Training: each layer by its own optimizer, on its own loss
    """

    model = make_model()
    timer = gallery.timed_fit(
        model,
        x_train,
        y_train,
        epochs=7 if gallery.QUICK else 10,
        batch_size=20 if gallery.QUICK else 100,
    )

    """
    ## The result: the label of highest total goodness
    """

    goodness = model.predict(x_test, batch_size=1000, verbose=0)
    accuracy = float(np.mean(np.argmax(goodness, axis=1) == y_test))
    bar = 0.25 if gallery.QUICK else 0.93
    gallery.report(
        "forward_forward",
        "held-out accuracy (label of highest goodness)",
        accuracy,
        f">= {bar}",
        timer.seconds_per_epoch(),
        keras_io=0.9764,
        objective_lines=gallery.source_lines(FFNetwork.layer_objective, FFNetwork.updates),
        train_step_lines=24 + 21,
    )
    assert accuracy >= bar, f"held-out accuracy {accuracy:.4f}, below {bar}"
