"""The VAE's figures, drawn from its outputs alone (see spec.produce).

- grid: generated digits in a 10x10 grid (the lecture's figure for exercise 5).
- reconstructions: held-out digits, each above its reconstruction (the decoder's mean at the
  posterior's mean).
- temperatures: the same latent draws scaled by each of several prior standard deviations, one
  row per scale.
"""

import numpy as np

from customfit.plots import digit_grid, mosaic, pyplot, save_png


def grid(samples, path, title=None):
    return digit_grid(np.asarray(samples).reshape(-1, 8, 8), path, title or "")


def _labelled_rows(rows, labels, path, title):
    """Rows of 8x8 digits as one picture (one image, not an axes per digit: a tenth of the
    time), each row named on its left."""
    plt = pyplot()
    columns = max(len(row) for row in rows)
    images = np.zeros((len(rows), columns, 8, 8), np.float32)
    for r, row in enumerate(rows):
        images[r, : len(row)] = np.asarray(row).reshape(-1, 8, 8)
    fig, ax = plt.subplots(figsize=(columns * 0.6 + 0.9, len(rows) * 0.62 + 0.3))
    ax.imshow(
        mosaic(images.reshape(-1, 8, 8), columns),
        cmap="gray_r",
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    ax.set_xticks([])
    # Row r's middle in the mosaic: 8-pixel digits with a 1-pixel gap above each.
    ax.set_yticks([1 + 9 * r + 3.5 for r in range(len(rows))], labels, fontsize=7)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=9)
    return save_png(fig, path)


def reconstructions(x, x_hat, path, title=None, columns=10, pairs_of_rows=2):
    rows, labels = [], []
    for pair in range(pairs_of_rows):
        chosen = slice(pair * columns, (pair + 1) * columns)
        rows += [x[chosen], x_hat[chosen]]
        labels += ["held out", "decoded"]
    return _labelled_rows(
        rows, labels, path, title and title + ": held-out digits and their reconstructions"
    )


def temperatures(scaled, scales, path, title=None, columns=10):
    rows = [images[:columns] for images in scaled]
    labels = [f"std {scale:g}" for scale in scales]
    return _labelled_rows(
        rows, labels, path, title and title + ": z ~ N(0, std^2 I), the same draws scaled"
    )
