"""The run loop around every engine: epochs, a progress bar, history, checkpoints, resume.

A Trainer (customfit.protocol) owns its framework; this loop owns everything else, so the
six engines look and behave alike: the same progress bar, the same history rows, the same
checkpoint file, and the same shuffling of each epoch (epoch e, counted from 1 as in the history,
is shuffled by customfit.data.epoch_seed(seed, e)), which is why a resumed run ends exactly where a
run that never stopped ends.
"""

import math
import signal
import sys
import threading
import time

from customfit import checkpoint, faults, loss_scale_state
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


class Stopped(Exception):
    """The loop stopped at the end of a step: `why` is "nonfinite" (the step's figures hold a NaN
    or an infinity: `figures` names them), "diverged" (a loss rose DIVERGED times above its first
    value, `first`) or "interrupt" (Ctrl-C). `checkpointed` says whether
    this epoch's checkpoint was written before stopping (Ctrl-C during the held-out pass)."""

    def __init__(self, why, epoch, step, steps, figures=None, checkpointed=False, first=None):
        super().__init__(f"{why} at epoch {epoch}, step {step} of {steps}")
        self.why, self.epoch, self.step, self.steps = why, epoch, step, steps
        self.figures, self.checkpointed = dict(figures or {}), checkpointed
        self.first = dict(first or {})


class CtrlC:
    """While training, the first Ctrl-C (SIGINT) asks the loop to stop at the end of the current
    step; a second one stops at once (KeyboardInterrupt). Outside the main thread, where Python
    runs no signal handler, Ctrl-C keeps its usual meaning."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _non_finite(figures):
    return {k: float(v) for k, v in figures.items() if not math.isfinite(float(v))}


# A loss that rises this many times its own size (at least 1) above its first value in this
# process is diverging: with --lr 50 the toy classifier's loss goes from 1.6 to 43074 in its first
# epoch while staying finite. Normal training moves a loss by far less (a GAN's gen_loss: 0.7 to
# about 10).
DIVERGED = 1000.0


def _is_loss(name):
    return name == "loss" or name.endswith("_loss")


def diverged(figures, first):
    """The losses among `figures` that rose more than DIVERGED times their first value (or 1)."""
    return {
        k: float(v)
        for k, v in figures.items()
        if _is_loss(k) and k in first and float(v) > first[k] + DIVERGED * max(1.0, abs(first[k]))
    }


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
    on_epoch_end(history). Returns the history (a list of dicts).

    Raises Stopped at the end of the first step whose figures are not finite (NaN or infinite:
    training on would only spread them) or whose loss has diverged (risen DIVERGED times above
    its first value in this call), and at the end of the step during which Ctrl-C came."""
    history = [dict(row) for row in (history or [])]
    meta = dict(meta or {})
    steps = math.ceil(len(split.train[0]) / batch_size)
    first = {}  # the first step's figures in this call: what divergence is measured from

    with CtrlC() as ctrl_c:
        for epoch in range(len(history) + 1, epochs + 1):
            bar = progress_bar(epoch, epochs, steps, verbose)
            done = [0]

            def on_batch(logs, bar=bar, epoch=epoch, done=done):
                done[0] += 1
                logs = faults.after_step(epoch, done[0], logs)
                shown = list(logs.items())[:_BAR_FIGURES]
                bar.set_postfix({k: _fmt(float(v)) for k, v in shown}, refresh=False)
                bar.update(1)
                bad = _non_finite(logs)
                if bad:
                    raise Stopped("nonfinite", epoch, done[0], steps, bad)
                if not first:
                    first.update({k: float(v) for k, v in logs.items()})
                bad = diverged(logs, first)
                if bad:
                    raise Stopped("diverged", epoch, done[0], steps, bad, first=first)
                if ctrl_c.requested:
                    raise Stopped("interrupt", epoch, done[0], steps)

            try:
                start = time.perf_counter()
                train = trainer.train_epoch(
                    *split.train,
                    batch_size=batch_size,
                    shuffle_seed=epoch_seed(seed, epoch),
                    on_batch=on_batch,
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
            bad = _non_finite({k: v for k, v in row.items() if k not in ("epoch", "seconds")})
            if bad:  # an engine that reports its figures once per epoch, or a held-out NaN
                raise Stopped("nonfinite", epoch, max(done[0], steps), steps, bad)
            history.append(row)

            if checkpoint_path is not None:
                arrays, trainer_meta = trainer.state()
                arrays = {**arrays, **loss_scale_state.arrays(trainer)}
                checkpoint.save(
                    checkpoint_path,
                    arrays,
                    {**meta, "epoch": epoch, "history": history, "trainer": trainer_meta},
                )
            if on_epoch_end is not None:
                on_epoch_end(history)
            if ctrl_c.requested:  # Ctrl-C during the held-out pass or the checkpoint's write
                raise Stopped("interrupt", epoch, steps, steps, checkpointed=True)
    return history


def restore(trainer, arrays, meta):
    """Put a checkpoint's state back into `trainer`; returns the history it carried."""
    trainer.load_state(arrays, meta.get("trainer") or {})
    loss_scale_state.restore(trainer, arrays)
    return [dict(row) for row in meta.get("history", [])]


def history_columns(history):
    """epoch, then the figures the engine reported (training, then held-out), then seconds."""
    return list(history[0]) if history else ["epoch", "seconds"]


def history_csv(history):
    """The history as CSV text; floats written with repr so that reruns compare exactly."""
    columns = history_columns(history)
    lines = [",".join(columns)]
    for row in history:
        lines.append(
            ",".join(repr(row[c]) if isinstance(row[c], float) else str(row[c]) for c in columns)
        )
    return "\n".join(lines) + "\n"
