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

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


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

    After each epoch: evaluate on the held-out split, append a history row (epoch, loss, accuracy,
    val_loss, val_accuracy, seconds: the training pass alone), write the checkpoint (the trainer's
    state(), with meta + {"epoch", "history", "trainer"}), then call on_epoch_end(history).
    Returns the history (a list of dicts)."""
    history = [dict(row) for row in (history or [])]
    meta = dict(meta or {})
    steps = math.ceil(len(split.x_train) / batch_size)

    for epoch in range(len(history) + 1, epochs + 1):
        bar = progress_bar(epoch, epochs, steps, verbose)

        def on_batch(logs, bar=bar):
            bar.set_postfix(
                {k: _fmt(float(logs[k])) for k in ("loss", "accuracy") if k in logs}, refresh=False
            )
            bar.update(1)

        try:
            start = time.perf_counter()
            train = trainer.train_epoch(
                split.x_train, split.y_train, batch_size,
                shuffle_seed=epoch_seed(seed, epoch), on_batch=on_batch,
            )
            seconds = time.perf_counter() - start
            val = trainer.evaluate(split.x_test, split.y_test, batch_size)
            row = {
                "epoch": epoch,
                "loss": float(train["loss"]),
                "accuracy": float(train["accuracy"]),
                "val_loss": float(val["loss"]),
                "val_accuracy": float(val["accuracy"]),
                "seconds": seconds,
            }
            bar.set_postfix(
                {k: _fmt(row[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
                refresh=False,
            )
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


def history_csv(history):
    """The history as CSV text; floats written with repr so that reruns compare exactly."""
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        lines.append(",".join(repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"


def read_history_csv(path):
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows
    ]
