"""Reads TensorBoard event files back, for tests: TensorBoard's own reader, whichever writer
wrote them (tf.summary stores scalars as tensors, torch's SummaryWriter as simple values)."""

import glob
import os

import numpy as np


def read_scalars(folder):
    """{tag: [(step, value), ...]} of every scalar in the event files directly under `folder`."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    assert glob.glob(os.path.join(folder, "events.out.tfevents.*")), f"no event file in {folder}"
    accumulator = event_accumulator.EventAccumulator(
        folder, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    found = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    for tag in tags["tensors"]:
        values = [
            (e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)
        ]
        if all(np.ndim(v) == 0 for _, v in values):
            found[tag] = [(step, float(v)) for step, v in values]
    return found
