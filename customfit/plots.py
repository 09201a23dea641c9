"""Figures (PNG), drawn with matplotlib's Agg backend. matplotlib is imported on first use only.

- decision_regions: the toy set's points over the trained model's decision regions.
- probabilities: a few test digits, each beside a bar chart of the model's class probabilities
  (the lecture's figure for exercise 1).
- curves: every figure in the history by epoch, training and held-out.
- digit_grid, labelled_mosaic, save_gif: generated digits as one grid (PNG) and as the frames of
  a GIF (Pillow), for the generative tasks.

The tasks' own figures (tasks/*/figures.py) draw with pyplot() and write with save_png().
"""

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path):
    """The figure as a PNG at `path`, written atomically; the figure is closed. Returns path."""
    import io
    import os

    from customfit.checkpoint import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write(path, buffer.getvalue())
    return os.fspath(path)


def save_gif(pictures, path, durations):
    """Pillow images as a looping GIF at `path`, written atomically; `durations` in milliseconds,
    one for every frame or one each. Returns path."""
    import io

    from customfit.checkpoint import atomic_write

    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0
    )
    atomic_write(path, buffer.getvalue())
    return str(path)


def decision_regions(
    predict_proba,
    x_train,
    y_train,
    x_test,
    y_test,
    path,
    num_classes=None,
    title=None,
    resolution=300,
):
    """The 2-D points, coloured by label, over the regions where the model answers each class."""
    plt = pyplot()
    x_all = np.concatenate([x_train, x_test])
    low, high = x_all.min(axis=0), x_all.max(axis=0)
    pad = 0.1 * (high - low) + 1e-3
    gx = np.linspace(low[0] - pad[0], high[0] + pad[0], resolution, dtype=np.float32)
    gy = np.linspace(low[1] - pad[1], high[1] + pad[1], resolution, dtype=np.float32)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    proba = np.asarray(predict_proba(grid))
    k = num_classes or proba.shape[1]
    answer = proba.argmax(axis=1).reshape(xx.shape)

    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    levels = np.arange(k + 1) - 0.5
    ax.contourf(xx, yy, answer, levels=levels, colors=[cmap(i % 10) for i in range(k)], alpha=0.25)
    ax.contour(xx, yy, answer, levels=levels, colors="k", linewidths=0.6, alpha=0.6)
    for c in range(k):
        m = y_train == c
        ax.scatter(
            x_train[m, 0],
            x_train[m, 1],
            s=5,
            color=cmap(c % 10),
            alpha=0.5,
            label=f"class {c}",
            linewidths=0,
        )
    wrong = 0
    if len(x_test):
        test_answer = np.asarray(predict_proba(x_test.astype(np.float32))).argmax(axis=1)
        missed = test_answer != y_test
        ax.scatter(
            x_test[:, 0],
            x_test[:, 1],
            s=9,
            facecolors="none",
            edgecolors=[cmap(int(c) % 10) for c in y_test],
            linewidths=0.6,
            label="test",
        )
        wrong = int(missed.sum())
        if wrong:
            ax.scatter(
                x_test[missed, 0],
                x_test[missed, 1],
                s=40,
                marker="x",
                color="k",
                linewidths=1.0,
                label=f"test, misclassified ({wrong})",
            )
    ax.set_xlim(gx[0], gx[-1])
    ax.set_ylim(gy[0], gy[-1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title is None and len(x_test):
        title = f"decision regions; held-out accuracy {1 - wrong / len(x_test):.4f}"
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=7, markerscale=2, framealpha=0.8)
    return save_png(fig, path)


def probabilities(predict_proba, x_test, y_test, path, count=6, num_classes=10, title=None):
    """The first `count` test digits (the last replaced by the first misclassified one, if any),
    each beside a bar chart of the model's probabilities (the true class's bar in green, a wrong
    answer's in red)."""
    plt = pyplot()
    count = min(count, len(x_test))
    all_proba = np.asarray(predict_proba(np.asarray(x_test, np.float32)))
    chosen = list(range(count))
    wrong = np.flatnonzero(all_proba.argmax(axis=1) != np.asarray(y_test))
    if len(wrong) and not set(wrong) & set(chosen):
        chosen[-1] = int(wrong[0])  # show one mistake too, if the model makes any
    images = np.asarray(x_test)[chosen]
    proba = all_proba[chosen]
    y_test = np.asarray(y_test)[chosen]
    fig, axes = plt.subplots(
        count,
        2,
        figsize=(6.4, 1.45 * count + 0.4),
        gridspec_kw={"width_ratios": [1, 2.6]},
        squeeze=False,
    )
    for i in range(count):
        image_ax, bar_ax = axes[i]
        image_ax.imshow(images[i].reshape(images[i].shape[:2]), cmap="gray_r", vmin=0, vmax=1)
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_ylabel(f"label {int(y_test[i])}", fontsize=8)
        answer = int(proba[i].argmax())
        colours = ["tab:blue"] * num_classes
        if answer != int(y_test[i]):
            colours[answer] = "tab:red"
        colours[int(y_test[i])] = "tab:green"
        bar_ax.bar(np.arange(num_classes), proba[i], color=colours)
        bar_ax.set_ylim(0, 1)
        bar_ax.set_xticks(np.arange(num_classes))
        bar_ax.tick_params(labelsize=7)
        bar_ax.set_title(f"answer {answer}, p = {proba[i, answer]:.3f}", fontsize=8, pad=2)
    axes[-1, 1].set_xlabel("class")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def curves(history, path, title=None):
    """Each figure the engine reported (loss, accuracy, a GAN's two losses, ...) by epoch, one
    panel each, training beside held-out where there is one."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    names = [
        k
        for k in (history[0] if history else {})
        if k not in ("epoch", "seconds") and not k.startswith("val_")
    ]
    fig, axes = plt.subplots(
        1, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 3.4), squeeze=False
    )
    for ax, name in zip(axes[0], names):
        values = [r[name] for r in history]
        ax.plot(epochs, values, "o-", label="training")
        held_out = [r.get(f"val_{name}") for r in history]
        if all(v is not None for v in held_out):
            ax.plot(epochs, held_out, "s--", label="held-out")
            values += held_out
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if name == "loss" and "accuracy" in names else name)
        if "loss" in name and all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if 0 < len(epochs) <= 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def mosaic(images, columns=10, gap=1):
    """(n, h, w) in [0, 1] -> one 2-D array, the images in rows of `columns`, `gap` pixels apart
    (the gaps are 0, white in the gray_r colour map)."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * (h + gap) + gap, columns * (w + gap) + gap), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        canvas[top : top + h, left : left + w] = image
    return canvas


def digit_grid(samples, path, title, count=100):
    """The first `count` digits as a 10 x 10 grid, dark strokes on white as the lecture draws."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.5))
    ax.imshow(mosaic(samples[:count]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return save_png(fig, path)


def labelled_mosaic(images, label, scale=4):
    """One GIF frame: the images' mosaic (ink dark, as gray_r draws it), `scale` times enlarged,
    under a line of text."""
    from PIL import Image, ImageDraw

    canvas = 255 - np.round(255 * mosaic(images)).astype(np.uint8)
    picture = Image.fromarray(canvas, mode="L").resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST
    )
    framed = Image.new("L", (picture.width, picture.height + 16), 255)
    framed.paste(picture, (0, 16))
    ImageDraw.Draw(framed).text((4, 2), label, fill=0)
    return framed
