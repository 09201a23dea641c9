"""What every script of the keras-io gallery shares: its data (MNIST, from a folder of MNIST's
IDX files or Keras's own download), the brief-run switch, a timer of epochs, the one line each
script ends by reporting (read by the tests and by the gallery page's table), and the judges of
the generated digits (a classifier of 14x14 digits, its digit score, a nearest-mean stand-in)."""

import functools
import inspect
import json
import os
import time

import keras
import numpy as np
from keras import layers

QUICK = os.environ.get("CUSTOMFIT_QUICK") == "1"


def mnist():
    """((x_train, y_train), (x_test, y_test)): 28x28x1 float32 images in [0, 1], int32 labels.

    From $CUSTOMFIT_MNIST where it is set (a folder of MNIST's four IDX files, as its authors
    distribute them, or an .npz in Keras's mnist.npz layout; the tests set it), else
    `keras.datasets.mnist.load_data()` (a download on first use, then Keras's cache)."""
    source = os.environ.get("CUSTOMFIT_MNIST")
    if source and os.path.isdir(source):
        arrays = _idx_folder(source)
    elif source:
        with np.load(source) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    else:
        (x, y), (xt, yt) = keras.datasets.mnist.load_data()
        arrays = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}

    def images(a):
        # One pass, into a new array: the same floats as a.astype("float32") / 255, ten times
        # faster on MNIST's 47 million bytes than casting first and dividing the copy.
        return np.divide(a, np.float32(255), dtype=np.float32)[..., None]

    return (
        (images(arrays["x_train"]), arrays["y_train"].astype("int32")),
        (images(arrays["x_test"]), arrays["y_test"].astype("int32")),
    )


@functools.cache
def _idx_folder(folder):
    """MNIST's IDX files as uint8 arrays, read (and unzipped) once in a process that runs several
    scripts; mnist() hands out new float arrays made from them, never these."""
    from customfit.tasks.mnist import idx

    return idx.read_folder(folder)


def cut_for_brief_run(data, n_train=1400, n_test=400):
    """((x_train, y_train), (x_test, y_test)) as given, or in a brief run their first n_train
    training and n_test test examples."""
    (x_train, y_train), (x_test, y_test) = data
    if QUICK:
        return (x_train[:n_train], y_train[:n_train]), (x_test[:n_test], y_test[:n_test])
    return (x_train, y_train), (x_test, y_test)


def random_labelled_digits():
    """An example batch of 32 uniform 28x28x1 images with random labels, {"x": ..., "y": ...}."""
    rng = np.random.default_rng(0)
    return {
        "x": rng.uniform(size=(32, 28, 28, 1)).astype("float32"),
        "y": rng.integers(0, 10, 32).astype("int32"),
    }


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch of fit(); `seconds_per_epoch()` is their median after the first
    (which also traces and compiles the step)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)

    def seconds_per_epoch(self):
        later = self.seconds[1:] or self.seconds
        return float(np.median(later)) if later else float("nan")


def timed_fit(model, *data, **fit_options):
    """model.fit(*data, **fit_options), silent in a brief run: the EpochTimer that timed it."""
    timer = EpochTimer()
    model.fit(*data, callbacks=[timer], verbose=0 if QUICK else 2, **fit_options)
    return timer


def source_lines(*functions):
    """How many lines of source these functions take: the objective set beside keras-io's
    train_step in the report."""
    return sum(len(inspect.getsource(f).splitlines()) for f in functions)


def report(example, figure, value, bar, seconds_per_epoch, **more):
    """Print the example's result as one line, and append it to $CUSTOMFIT_GALLERY_OUT (JSON
    lines) where that is set. `figure` names what `value` measures; `bar` is what it must reach,
    written as the script's assert checks it (e.g. ">= 0.95")."""
    line = {
        "example": example,
        "backend": keras.backend.backend(),
        "quick": QUICK,
        "figure": figure,
        "value": float(value),
        "bar": bar,
        "seconds_per_epoch": round(float(seconds_per_epoch), 3),
        **more,
    }
    print(f"{example} on {line['backend']}: {figure} {float(value):.4g} (bar {bar})")
    out = os.environ.get("CUSTOMFIT_GALLERY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


def picture_path(example):
    """Where a full run saves its picture: $CUSTOMFIT_GALLERY_FIGURES (the gallery page's
    folder) or the working folder, named by example and backend."""
    folder = os.environ.get("CUSTOMFIT_GALLERY_FIGURES", ".")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{example}-{keras.backend.backend()}.png")


# ---- judging generated 14x14 digits (dcgan, conditional_gan, wgan_gp) ----


def shrink(x):  # 28x28 -> 14x14, the mean of each 2x2 block
    return x.reshape(-1, 14, 2, 14, 2, 1).mean(axis=(2, 4))


def train_classifier(x, y, epochs):
    classifier = keras.Sequential(
        [
            keras.Input((14, 14, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    classifier.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return classifier


class NearestMean:
    """The brief runs' judge: a softmax over minus the squared distance to each class's mean."""

    def __init__(self, x, y):
        self.means = np.stack([x[y == k].mean(axis=0) for k in range(10)])

    def predict(self, x, **kwargs):
        d = np.sum((x[:, None] - self.means[None]) ** 2, axis=(2, 3, 4))
        e = np.exp(-(d - d.min(axis=1, keepdims=True)))
        return e / e.sum(axis=1, keepdims=True)


def digit_judge(train, test):
    """(classifier, its accuracy on 2000 real test digits): a small CNN trained for 3 epochs on
    20000 real 14x14 digits, or in a brief run the nearest class mean of 1000 (nothing to train)."""
    (x, y), (x_test, y_test) = train, test
    if QUICK:
        classifier = NearestMean(x[:1000], y[:1000])
    else:
        classifier = train_classifier(x[:20000], y[:20000], 3)
    accuracy = np.mean(classifier.predict(x_test[:2000], verbose=0).argmax(axis=1) == y_test[:2000])
    return classifier, accuracy


def digit_score(classifier, images):
    """The Inception Score with a digit classifier, exp(E_x KL(p(y|x) || p(y))): high when each
    digit is classified with confidence and the ten classes are drawn about equally often (one
    digit drawn over and over, or noise, scores near 1)."""
    p = classifier.predict(images, batch_size=500, verbose=0)
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    return float(np.exp(kl.mean()))


def digit_scores(classifier, samples, real):
    """The digit score of the generated `samples`, and that of as many of the `real` digits."""
    return digit_score(classifier, samples), digit_score(classifier, real[: len(samples)])


def save_digit_grid(example, digits, **imsave_options):
    """Save (rows, columns, 14, 14) digits as one grey picture, the example's (picture_path)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = digits.shape[:2]
    grid = digits.transpose(0, 2, 1, 3).reshape(14 * rows, 14 * columns)
    plt.imsave(picture_path(example), grid, cmap="gray", **imsave_options)


def save_image_grid(example, rows, titles=()):
    """Save rows of grey 2-D images in [0, 1] as the example's picture (picture_path), each row
    titled on its left where `titles` names it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(images) for images in rows)
    height = len(rows) * (1.1 if titles else 1.0)  # room for the titles
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns, height), squeeze=False)
    for r, images in enumerate(rows):
        for ax, image in zip(axes[r], images):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        for ax in axes[r]:
            ax.axis("off")
        if titles:
            axes[r, 0].set_title(titles[r], fontsize=8, loc="left")
    fig.savefig(picture_path(example), dpi=80, bbox_inches="tight")
