"""The GAN task's figures, drawn from NumPy arrays alone (samples, per-epoch grids).

- grid: a 10 x 10 grid of generated digits (the lecture's figure for exercise 7), PNG.
- animation: the per-epoch grids of one fixed latent batch, as a GIF (Pillow), one frame per
  epoch, labelled with the epoch.
The losses over training are curves.png, which the runner draws from the history.
"""

from customfit import plots


def grid(samples, path, title=None, count=100):
    """The first `count` samples as a 10 x 10 grid, dark strokes on white as the lecture draws."""
    return plots.digit_grid(samples, path, title or "generated digits", count)


def animation(frames, path, scale=4, milliseconds=400):
    """frames: [(epoch, (n, 8, 8) samples)], in order. Writes a looping GIF atomically."""
    pictures = [
        plots.labelled_mosaic(samples, f"epoch {epoch}", scale) for epoch, samples in frames
    ]
    if not pictures:
        raise ValueError("animation: no frames")
    return plots.save_gif(pictures, path, milliseconds)
