"""The adversarial task's figures, drawn from its outputs alone (see spec.produce).

- one_digit: the lecture's picture, for one held-out digit toward each of its targets: the
  original, the perturbation (a diverging colour map centred on 0), the adversarial image with
  the model's answer.
- success_against_eps: pgd, the success rate on a fixed subset of pairs at each eps; the
  lecture's method has no eps, so the share of pairs that succeed with an L-infinity norm of at
  most eps.
"""

import numpy as np

from customfit.plots import pyplot, save_png


def one_digit(outputs, path, title=None):
    x, x_adv, label, target, proba = (
        outputs[k] for k in ("x", "x_adv", "label", "target", "proba")
    )
    # The first digit attacked toward the most targets (all 9 of them when every pair is run).
    digits, counts = np.unique(outputs["index"], return_counts=True)
    rows = np.flatnonzero(outputs["index"] == digits[int(np.argmax(counts))])
    plt = pyplot()
    fig, axes = plt.subplots(3, len(rows), figsize=(1.25 * len(rows) + 0.6, 4.4), squeeze=False)
    dx = (x_adv - x)[rows]
    limit = float(np.abs(dx).max()) or 1.0
    for column, i in enumerate(rows):
        answer = int(proba[i].argmax())
        panels = (
            (x[i], "gray_r", 0, 1, f"label {int(label[i])}"),
            (x_adv[i] - x[i], "RdBu_r", -limit, limit, f"target {int(target[i])}"),
            (x_adv[i], "gray_r", 0, 1, f"answer {answer} ({proba[i, answer]:.2f})"),
        )
        for row, (image, cmap, low, high, text) in enumerate(panels):
            ax = axes[row, column]
            ax.imshow(image.reshape(image.shape[:2]), cmap=cmap, vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "tab:green" if row == 2 and answer == int(target[i]) else "black"
            ax.set_title(text, fontsize=7, color=colour, pad=2)
        if column == 0:
            for row, name in enumerate(("original", "perturbation", "adversarial")):
                axes[row, 0].set_ylabel(name, fontsize=8)
    fig.colorbar(axes[1, -1].images[0], ax=axes[1, :].tolist(), shrink=0.9, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


def success_against_eps(outputs, path, title=None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if "sweep_eps" in outputs:
        eps = outputs["sweep_eps"]
        hits = outputs["sweep_proba"].argmax(axis=2) == outputs["sweep_target"][None]
        ax.plot(eps, hits.mean(axis=1), "o-")
        ax.set_title(f"targeted PGD, {hits.shape[1]} pairs", fontsize=9)
    else:
        n = len(outputs["x"])
        linf = np.abs(outputs["x_adv"] - outputs["x"]).reshape(n, -1).max(axis=1)
        success = outputs["proba"].argmax(axis=1) == outputs["target"]
        eps = np.linspace(0, 1, 101)
        ax.plot(eps, [(success & (linf <= e)).mean() for e in eps], "-")
        ax.set_title(f"lecture's method: successes with L-inf norm <= eps, {n} pairs", fontsize=9)
    ax.set_xlabel("eps (L-infinity)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
