"""
Title: Self-supervised representation learning with SimSiam
keras-io: examples/vision/simsiam.py (https://keras.io/examples/vision/simsiam/)
Description: SimSiam (Chen and He, 2020) on MNIST without its labels: an encoder (a
    convolutional backbone and a projection head) and a predictor learn to make the prediction
    from one augmented view of an image match the encoding of another view, the encoding held
    fixed by a stop-gradient; then a linear classifier is fitted on the frozen backbone's
    features.
Shows: an objective on unlabeled data (`fit(x)`), two random views of each batch made inside
    the objective with `keras.ops` and `keras.random`, `ops.stop_gradient` on the target
    branch, and weight decay as kernel regularizers of the heads (the layers' own losses).
Result: linear-probe accuracy on held-out MNIST of the frozen backbone's features, >= 0.78 and
    above the same probe on the backbone at its random initialization; keras-io reports a
    linear probe of 23.03% on CIFAR-10 (ResNet20, 5 epochs of pre-training). Here (random
    backbone's probe beside): tensorflow 0.8374 (0.7503), torch 0.8296 (0.7366), jax 0.8255
    (0.7454).
Run: KERAS_BACKEND=jax python examples/keras_io/simsiam.py   (tensorflow and torch too;
    CUSTOMFIT_QUICK=1 for a brief run)
"""

"""
## Setup
"""

import keras
import numpy as np
from keras import layers, ops, regularizers

import customfit as cf
import gallery

"""
## Augmentation, with keras.ops

Two views of the same digit: each moved by its own random offset (one-hot row and column
matrices), a square of it erased, its contrast changed and noise added.
"""


def augment(x, seed):
    n, size = ops.shape(x)[0], ops.shape(x)[1]
    grid = ops.arange(size)
    dy, dx, top, left = ops.unstack(keras.random.randint((4, n), -4, 5, seed=seed))
    rows = ops.cast(grid[None, :, None] == grid[None, None, :] + dy[:, None, None], x.dtype)
    cols = ops.cast(grid[None, :, None] == grid[None, None, :] + dx[:, None, None], x.dtype)
    x = ops.einsum("bij,bjkc,blk->bilc", rows, x, cols)

    def inside(start):
        return (grid[None] >= start[:, None] + 9) & (grid[None] < start[:, None] + 19)

    erased = inside(top)[:, :, None] & inside(left)[:, None, :]
    x = x * (1.0 - ops.cast(erased, x.dtype))[..., None]
    contrast = keras.random.uniform((n, 1, 1, 1), 0.5, 1.0, seed=seed)
    noise = keras.random.uniform((n, 1, 1, 1), 0.0, 0.3, seed=seed)
    return ops.clip(contrast * x + noise * keras.random.normal(ops.shape(x), seed=seed), 0, 1)


"""
## The networks

The backbone: three strided convolutions with batch normalization, pooled to 64 features
(keras-io uses a ResNet20). A convolution followed by batch normalization has no bias: the
normalization takes away any shift, so its gradient would be zero but for rounding. The projection head and the predictor are small dense networks
with batch normalization; the predictor is a bottleneck, as in the paper (keras-io: 2048 and
512 units; here 128 and 32). The heads' kernels carry an L2 penalty (weight decay 5e-4).
"""


def dense(units, **kwargs):
    return layers.Dense(units, use_bias=False, kernel_regularizer=regularizers.l2(5e-4), **kwargs)


def networks():
    backbone = keras.Sequential(
        [keras.Input((28, 28, 1))]
        + [
            block
            for width in (16, 32, 64)
            for block in (
                layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False),
                layers.BatchNormalization(),
                layers.ReLU(),
            )
        ]
        + [layers.GlobalAveragePooling2D()],
        name="backbone",
    )
    projector = keras.Sequential(
        [
            dense(128),
            layers.BatchNormalization(),
            layers.ReLU(),
            dense(128),
            layers.BatchNormalization(),
        ],
        name="projector",
    )
    predictor = keras.Sequential(
        [dense(32), layers.ReLU(), layers.BatchNormalization(), layers.Dense(128)],
        name="predictor",
    )
    return backbone, projector, predictor


"""
## The model

The loss is the negative cosine similarity between the prediction from one view and the
encoding of the other, symmetrized; the encoding is a constant for the gradient
(`stop_gradient`), which is what keeps SimSiam from collapsing to a constant output.
"""


def negative_cosine(p, z):
    z = ops.stop_gradient(z)
    p = p / ops.norm(p, axis=1, keepdims=True)
    z = z / ops.norm(z, axis=1, keepdims=True)
    return -ops.mean(ops.sum(p * z, axis=1))


class SimSiam(cf.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.projector, self.predictor = networks()
        self.seed = keras.random.SeedGenerator(0)

    def call(self, x, training=False):
        return self.backbone(x, training=training)

    def objective(self, x, training=True):
        z1 = self.projector(
            self.backbone(augment(x, self.seed), training=training), training=training
        )
        z2 = self.projector(
            self.backbone(augment(x, self.seed), training=training), training=training
        )
        p1, p2 = self.predictor(z1, training=training), self.predictor(z2, training=training)
        return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2


def make_model(steps=1000):
    keras.utils.set_random_seed(0)
    model = SimSiam()
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))
    return model


def example_batch():
    return {"x": np.random.default_rng(0).uniform(size=(32, 28, 28, 1)).astype("float32")}


def linear_probe(model, train, test):
    """Accuracy on `test` of a logistic regression fitted on `train`'s backbone features, and
    the function giving the probe's logits (the picture's space)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def features(x):
        return model.predict(x, batch_size=1000, verbose=0)

    scaler = StandardScaler().fit(features(train[0]))
    probe = LogisticRegression(max_iter=500).fit(scaler.transform(features(train[0])), train[1])

    def logits(x):
        return probe.decision_function(scaler.transform(features(x)))

    return probe.score(scaler.transform(features(test[0])), test[1]), logits


if __name__ == "__main__":
    """
    ## Data: MNIST's images, without their labels for pre-training
    """

    (x_train, y_train), (x_test, y_test) = gallery.cut_for_brief_run(gallery.mnist())
    epochs, batch_size = (1, 100) if gallery.QUICK else (3, 128)  # 100: no ragged batch
    labeled = (x_train[:10000], y_train[:10000])  # what the linear probe is fitted on

    """
    ## Pre-training
    """

    model = make_model(steps=epochs * (len(x_train) // batch_size))
    random_probe, _ = linear_probe(model, labeled, (x_test, y_test))
    timer = gallery.timed_fit(model, x_train, epochs=epochs, batch_size=batch_size)

    """
    ## Evaluation: a linear probe on the frozen backbone's features
    """

    accuracy, probe_logits = linear_probe(model, labeled, (x_test, y_test))
    print(f"linear probe: {accuracy:.4f} (at random initialization: {random_probe:.4f})")
    bar = 0.5 if gallery.QUICK else 0.78
    gallery.report(
        "simsiam",
        "linear-probe accuracy on held-out MNIST (frozen backbone)",
        accuracy,
        f">= {bar} and above the random backbone's",
        timer.seconds_per_epoch(),
        keras_io=0.2303,
        objective_lines=gallery.source_lines(SimSiam.objective, negative_cosine),
        train_step_lines=23 + 10,
        random_init_probe=random_probe,
    )
    if not gallery.QUICK:  # the picture: the test digits in the probe's logits, first two axes
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        logits = probe_logits(x_test[:3000])
        centred = logits - logits.mean(0)
        plane = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        plt.figure(figsize=(6, 6))
        plt.scatter(plane[:, 0], plane[:, 1], c=y_test[:3000], cmap="tab10", s=4)
        plt.colorbar(label="digit")
        plt.title(f"SimSiam: the linear probe's logits, PCA ({keras.backend.backend()})")
        plt.savefig(gallery.picture_path("simsiam"), dpi=100)
    assert accuracy >= bar and (gallery.QUICK or accuracy > random_probe), (
        f"linear probe {accuracy:.4f} (random backbone {random_probe:.4f}), below {bar}"
    )
