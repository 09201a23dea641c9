"""The score tasks' figures, drawn from NumPy arrays alone.

- animation: the samples moving under Langevin sampling, over the data (the lecture's GIF), one
  frame per recorded step, labelled with the step (and the noise level for dsm).
- scatter: the final samples over the data.
- score_field: the learned score as arrows on a grid, over the data, one panel per noise level.
- grid / grid_animation: generated digits as a 10 x 10 grid (PNG), and that grid moving through
  the noise levels (GIF).
"""

import numpy as np

from customfit.plots import digit_grid, labelled_mosaic, pyplot, save_gif, save_png

# The lecture's window: plt.xlim(-3, 3), plt.ylim(-4, 4).
XLIM, YLIM = (-3.0, 3.0), (-4.0, 4.0)


def _axes_2d(ax, data, title):
    ax.scatter(
        data[:, 0], data[:, 1], s=3, color="tab:blue", alpha=0.25, linewidths=0, label="data"
    )
    ax.set_xlim(*XLIM)
    ax.set_ylim(*YLIM)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def animation(frames, labels, data, path, milliseconds=250, size=(4.0, 4.8)):
    """frames (F, n, 2), one label each; writes a looping GIF atomically. What stays (the data,
    the axes) is drawn once; each frame restores it and draws only the moving points, the
    legend over them and the label (blitting: a fraction of a full draw per frame)."""
    from PIL import Image

    if len(frames) == 0:
        raise ValueError("animation: no frames")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=80)
    _axes_2d(ax, data, labels[0])
    points = ax.scatter(
        frames[0][:, 0],
        frames[0][:, 1],
        s=3,
        color="tab:orange",
        alpha=0.6,
        linewidths=0,
        label="samples",
    )
    legend = ax.legend(loc="upper right", fontsize=7, markerscale=3)
    moving = (points, legend, ax.title)
    for artist in moving:
        artist.set_animated(True)
    fig.canvas.draw()
    still = fig.canvas.copy_from_bbox(fig.bbox)
    pictures = []
    for frame, label in zip(frames, labels):
        fig.canvas.restore_region(still)
        points.set_offsets(np.asarray(frame))
        ax.title.set_text(label)
        for artist in moving:
            ax.draw_artist(artist)
        rgba = np.asarray(fig.canvas.buffer_rgba())
        pictures.append(
            Image.fromarray(rgba[..., :3].copy()).convert("P", palette=Image.ADAPTIVE, colors=64)
        )
    plt.close(fig)
    return save_gif(pictures, path, _resting_on_the_last(milliseconds, len(pictures)))


def scatter(samples, data, path, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 6.0))
    _axes_2d(ax, data, title)
    ax.scatter(
        samples[:, 0],
        samples[:, 1],
        s=3,
        color="tab:orange",
        alpha=0.6,
        linewidths=0,
        label="samples",
    )
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    return save_png(fig, path)


def score_field(grid, fields, labels, data, path, title):
    """grid (G*G, 2) points in row-major order; fields (K, G*G, 2) the score there, one panel per
    field. Every arrow has the same length and shows where the score points; its colour is the
    score's size (log10), which spans orders of magnitude at a small noise level."""
    plt = pyplot()
    side = int(round(np.sqrt(len(grid))))
    spacing = float(grid[1, 0] - grid[0, 0])
    fig, axes = plt.subplots(1, len(fields), figsize=(4.4 * len(fields), 5.2), squeeze=False)
    for ax, field, label in zip(axes[0], fields, labels):
        _axes_2d(ax, data, label)
        norm = np.linalg.norm(field, axis=1)
        unit = field / np.maximum(norm, 1e-12)[:, None]
        shape = (side, side)
        arrows = ax.quiver(
            grid[:, 0].reshape(shape),
            grid[:, 1].reshape(shape),
            unit[:, 0].reshape(shape),
            unit[:, 1].reshape(shape),
            np.log10(np.maximum(norm, 1e-12)).reshape(shape),
            cmap="viridis",
            angles="xy",
            scale_units="xy",
            scale=1.0 / (0.8 * spacing),
            width=0.004,
        )
        fig.colorbar(arrows, ax=ax, shrink=0.7, label="log10 |s|")
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def grid(samples, path, title, count=100):
    """The first `count` digits as a 10 x 10 grid, dark strokes on white as the lecture draws."""
    return digit_grid(samples, path, title, count)


def grid_animation(frames, labels, path, scale=4, milliseconds=300):
    """frames (F, n, 8, 8) in [0, 1] (the first 100 of each shown), one label each: a GIF."""
    pictures = [labelled_mosaic(frame[:100], label, scale) for frame, label in zip(frames, labels)]
    if not pictures:
        raise ValueError("grid_animation: no frames")
    return save_gif(pictures, path, _resting_on_the_last(milliseconds, len(pictures)))


def _resting_on_the_last(milliseconds, frames):
    """Every frame's duration, the last (the result) shown four times as long."""
    return [milliseconds] * (frames - 1) + [4 * milliseconds]
