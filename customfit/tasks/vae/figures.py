"""The VAE's figures, drawn from its outputs alone (see spec.produce).

- grid: generated digits in a 10x10 grid (the lecture's figure for exercise 5).
- reconstructions: held-out digits, each above its reconstruction (the decoder's mean at the
  posterior's mean).
- temperatures: the same latent draws scaled by each of several prior standard deviations, one
  row per scale.
"""

import numpy as np

from customfit.plots import pyplot, save_png


def _show(ax, image):
    ax.imshow(np.asarray(image).reshape(8, 8), cmap="gray_r", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def grid(samples, path, title=None, n=10):
    plt = pyplot()
    fig, axes = plt.subplots(n, n, figsize=(n * 0.6, n * 0.6 + 0.3))
    for ax, image in zip(axes.ravel(), samples[: n * n]):
        _show(ax, image)
    fig.subplots_adjust(wspace=0.06, hspace=0.06)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


def reconstructions(x, x_hat, path, title=None, columns=10, pairs_of_rows=2):
    plt = pyplot()
    fig, axes = plt.subplots(
        2 * pairs_of_rows,
        columns,
        figsize=(columns * 0.6 + 0.8, 2 * pairs_of_rows * 0.62 + 0.3),
        squeeze=False,
    )
    for k in range(pairs_of_rows * columns):
        row, column = 2 * (k // columns), k % columns
        _show(axes[row, column], x[k])
        _show(axes[row + 1, column], x_hat[k])
    for row in range(pairs_of_rows):
        axes[2 * row, 0].set_ylabel("held out", fontsize=7)
        axes[2 * row + 1, 0].set_ylabel("decoded", fontsize=7)
    fig.subplots_adjust(wspace=0.06, hspace=0.1)
    if title:
        fig.suptitle(title + ": held-out digits and their reconstructions", fontsize=9)
    return save_png(fig, path)


def temperatures(scaled, scales, path, title=None, columns=10):
    plt = pyplot()
    fig, axes = plt.subplots(
        len(scales), columns, figsize=(columns * 0.6 + 0.9, len(scales) * 0.62 + 0.3), squeeze=False
    )
    for row, (scale, images) in enumerate(zip(scales, scaled)):
        for column in range(columns):
            _show(axes[row, column], images[column])
        axes[row, 0].set_ylabel(f"std {scale:g}", fontsize=7)
    fig.subplots_adjust(wspace=0.06, hspace=0.1)
    if title:
        fig.suptitle(title + ": z ~ N(0, std^2 I), the same draws scaled", fontsize=9)
    return save_png(fig, path)
