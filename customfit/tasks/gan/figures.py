"""The GAN task's figures, drawn from NumPy arrays alone (samples, per-epoch grids).

- grid: a 10 x 10 grid of generated digits (the lecture's figure for exercise 7), PNG.
- animation: the per-epoch grids of one fixed latent batch, as a GIF (Pillow), one frame per
  epoch, labelled with the epoch.
The losses over training are curves.png, which the runner draws from the history.
"""

import io

import numpy as np

from customfit.plots import pyplot, save_png


def mosaic(images, columns=10, gap=1):
    """(n, 8, 8) in [0, 1] -> one 2-D array, the digits in rows of `columns`, `gap` pixels apart
    (the gaps are 0, white in the gray_r colour map)."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * (h + gap) + gap, columns * (w + gap) + gap), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        canvas[top:top + h, left:left + w] = image
    return canvas


def grid(samples, path, title=None, count=100):
    """The first `count` samples as a 10 x 10 grid, dark strokes on white as the lecture draws."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.5))
    ax.imshow(mosaic(samples[:count]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "generated digits", fontsize=10)
    return save_png(fig, path)


def animation(frames, path, scale=4, milliseconds=400):
    """frames: [(epoch, (n, 8, 8) samples)], in order. Writes a looping GIF atomically."""
    from PIL import Image, ImageDraw

    from customfit.checkpoint import atomic_write

    pictures = []
    for epoch, samples in frames:
        canvas = 255 - np.round(255 * mosaic(samples)).astype(np.uint8)  # gray_r: ink is dark
        picture = Image.fromarray(canvas, mode="L").resize(
            (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
        framed = Image.new("L", (picture.width, picture.height + 16), 255)
        framed.paste(picture, (0, 16))
        ImageDraw.Draw(framed).text((4, 2), f"epoch {epoch}", fill=0)
        pictures.append(framed)
    if not pictures:
        raise ValueError("animation: no frames")
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=milliseconds, loop=0)
    atomic_write(path, buffer.getvalue())
    return str(path)
