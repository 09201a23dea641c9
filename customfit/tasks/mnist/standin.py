"""A small MNIST-layout file made from scikit-learn's 8x8 digits (shipped with scikit-learn, so
nothing is downloaded): each digit scaled up 3x to 24x24, set in a 28x28 frame at a seeded
random offset, as uint8 0-255 with labels 0-9. Real handwriting, so the lecture's CNN learns it
as it learns MNIST; the tests and `customfit bench` use it where Keras's mnist.npz is absent."""

import numpy as np


def digits_at_28(n_train, n_test, seed=0):
    """{x_train, y_train, x_test, y_test} in mnist.npz's layout, from disjoint digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    if n_train + n_test > len(digits.images):
        raise ValueError(
            f"at most {len(digits.images)} digits in all; asked for {n_train + n_test}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))[: n_train + n_test]
    big = np.kron(digits.images[order], np.ones((3, 3))) * (255.0 / 16.0)  # (n, 24, 24)
    images = np.zeros((len(order), 28, 28), np.uint8)
    for image, digit, (dy, dx) in zip(images, big, rng.integers(0, 5, size=(len(order), 2))):
        image[dy : dy + 24, dx : dx + 24] = np.round(digit).astype(np.uint8)
    labels = digits.target[order].astype(np.uint8)
    return {
        "x_train": images[:n_train],
        "y_train": labels[:n_train],
        "x_test": images[n_train:],
        "y_test": labels[n_train:],
    }


def write(path, n_train=1000, n_test=300, seed=0):
    np.savez_compressed(path, **digits_at_28(n_train, n_test, seed))
    return path
