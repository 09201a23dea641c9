"""`customfit run ... --tensorboard DIR`: each epoch's history row as TensorBoard scalars, written
by the engine's own framework: keras.callbacks.TensorBoard on the keras-* engines, tf.summary on
tensorflow, torch.utils.tensorboard.SummaryWriter on torch, flax.metrics.tensorboard.SummaryWriter
on flax.

Every engine writes the same layout as Keras's TensorBoard callback, so that runs of different
engines overlay in one TensorBoard: DIR/train holds `epoch_<name>` for each training figure of the
history (and `epoch_seconds`), DIR/validation holds `epoch_<name>` for each val_<name>; the step is
the epoch number as history.csv counts it (from 1). The keras-* engines also log their optimizers'
learning rates, as the callback does.
"""

import os


def _split(row):
    train = {k: float(v) for k, v in row.items() if k != "epoch" and not k.startswith("val_")}
    validation = {k[len("val_") :]: float(v) for k, v in row.items() if k.startswith("val_")}
    return train, validation


class _Keras:
    def __init__(self, folder, trainer):
        import keras

        models = [v for v in vars(trainer).values() if isinstance(v, keras.Model)]
        if len(models) != 1:
            raise TypeError(
                f"a keras-* trainer holds one keras.Model; {type(trainer).__name__} holds {len(models)}"
            )
        self.callback = keras.callbacks.TensorBoard(log_dir=folder, write_graph=False)
        self.callback.set_model(models[0])
        self.callback.on_train_begin()

    def write(self, row):
        logs = {k: float(v) for k, v in row.items() if k != "epoch"}
        self.callback.on_epoch_end(row["epoch"], logs)

    def close(self):
        self.callback.on_train_end()


class _RunWriters:
    """One framework writer per TensorBoard run (train, validation), each row split between them;
    `write_figures(writer, figures, step)` is the framework's way of writing a row's scalars."""

    RUNS = ("train", "validation")

    def __init__(self, folder, open_writer, write_figures):
        self.writers = {run: open_writer(os.path.join(folder, run)) for run in self.RUNS}
        self.write_figures = write_figures

    def write(self, row):
        for run, figures in zip(self.RUNS, _split(row)):
            self.write_figures(self.writers[run], figures, row["epoch"])

    def close(self):
        for writer in self.writers.values():
            writer.close()


def _tensorflow(folder, trainer):
    import tensorflow as tf

    def write_figures(writer, figures, step):
        with writer.as_default(step=step):
            for name, value in figures.items():
                tf.summary.scalar(f"epoch_{name}", value)
        writer.flush()

    return _RunWriters(folder, tf.summary.create_file_writer, write_figures)


def _torch(folder, trainer):
    from torch.utils.tensorboard import SummaryWriter

    def write_figures(writer, figures, step):
        for name, value in figures.items():
            writer.add_scalar(f"epoch_{name}", value, step)
        writer.flush()

    return _RunWriters(folder, SummaryWriter, write_figures)


def _flax(folder, trainer):
    from flax.metrics.tensorboard import SummaryWriter

    def write_figures(writer, figures, step):
        for name, value in figures.items():
            writer.scalar(f"epoch_{name}", value, step)

    return _RunWriters(folder, SummaryWriter, write_figures)


_WRITERS = {
    "tensorflow": _tensorflow,
    "torch": _torch,
    "flax": _flax,
    "keras-tensorflow": _Keras,
    "keras-torch": _Keras,
    "keras-jax": _Keras,
}


def open_writer(engine, folder, trainer):
    """An object with write(history_row) and close(), writing under `folder`."""
    return _WRITERS[engine](folder, trainer)
