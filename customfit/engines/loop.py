"""The run loop around every engine: epochs, a progress bar, history, checkpoints, resume.

A Trainer (customfit.engines.protocol) owns its framework; this loop owns everything else, so the
six engines look and behave alike: the same progress bar, the same history rows, the same
checkpoint file, and the same shuffling of each epoch (epoch e, counted from 1 as in the history,
is shuffled by customfit.data.epoch_seed(seed, e)), which is why a resumed run ends exactly where a
run that never stopped ends.
"""

import math
import sys
import time

from customfit import checkpoint
from customfit.data import epoch_seed

# How many of an epoch's running means the progress bar shows (a GAN reports several losses).
_BAR_FIGURES = 4


def _fmt(value):
    return f"{value:.4f}"


def progress_bar(epoch, epochs, steps, verbose=True):
    """A Keras-like bar: 'Epoch 3/10: 100%|#####| 240/240 [00:01<00:00, loss=0.1234, accuracy=0.9500]'."""
    from tqdm.auto import tqdm

    return tqdm(
        total=steps,
        desc=f"Epoch {epoch}/{epochs}",
        unit="step",
        disable=not verbose,
        leave=True,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.1,
    )


def fit(
    trainer,
    split,
    *,
    epochs,
    batch_size,
    seed,
    checkpoint_path=None,
    meta=None,
    history=None,
    on_epoch_end=None,
    verbose=True,
):
    """Train `trainer` on `split` from epoch len(history) + 1 to `epochs`.

    After each epoch: evaluate on the held-out split, append a history row (epoch, the trainer's
    running means, the held-out means prefixed val_, seconds: the training pass alone), write the
    checkpoint (the trainer's state(), with meta + {"epoch", "history", "trainer"}), then call
    on_epoch_end(history). Returns the history (a list of dicts)."""
    history = [dict(row) for row in (history or [])]
    meta = dict(meta or {})
    steps = math.ceil(len(split.train[0]) / batch_size)

    for epoch in range(len(history) + 1, epochs + 1):
        bar = progress_bar(epoch, epochs, steps, verbose)

        def on_batch(logs, bar=bar):
            shown = list(logs.items())[:_BAR_FIGURES]
            bar.set_postfix({k: _fmt(float(v)) for k, v in shown}, refresh=False)
            bar.update(1)

        try:
            start = time.perf_counter()
            train = trainer.train_epoch(
                *split.train, batch_size=batch_size,
                shuffle_seed=epoch_seed(seed, epoch), on_batch=on_batch,
            )
            seconds = time.perf_counter() - start
            val = trainer.evaluate(*split.test, batch_size=batch_size)
            row = {
                "epoch": epoch,
                **{k: float(v) for k, v in train.items()},
                **{f"val_{k}": float(v) for k, v in val.items()},
                "seconds": seconds,
            }
            shown = [k for k in row if k not in ("epoch", "seconds")][:_BAR_FIGURES]
            bar.set_postfix({k: _fmt(row[k]) for k in shown}, refresh=False)
            if bar.n < bar.total:  # an engine that reports fewer batches than it ran
                bar.update(bar.total - bar.n)
        finally:
            bar.close()
        history.append(row)

        if checkpoint_path is not None:
            arrays, trainer_meta = trainer.state()
            checkpoint.save(
                checkpoint_path,
                arrays,
                {**meta, "epoch": epoch, "history": history, "trainer": trainer_meta},
            )
        if on_epoch_end is not None:
            on_epoch_end(history)
    return history


def restore(trainer, arrays, meta):
    """Put a checkpoint's state back into `trainer`; returns the history it carried."""
    trainer.load_state(arrays, meta.get("trainer") or {})
    return [dict(row) for row in meta.get("history", [])]


def history_columns(history):
    """epoch, then the figures the engine reported (training, then held-out), then seconds."""
    return list(history[0]) if history else ["epoch", "seconds"]


def history_csv(history):
    """The history as CSV text; floats written with repr so that reruns compare exactly."""
    columns = history_columns(history)
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join(repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in columns))
    return "\n".join(lines) + "\n"


def read_history_csv(path):
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows
    ]
