"""A Trainer's state taken through files the way a checkpoint stores it (plain arrays and JSON,
nothing pickled), so that a worker's resume check covers what really reaches the disk."""

import json
import os
import tempfile

import numpy as np


def through_files(state, meta):
    with tempfile.TemporaryDirectory() as folder:
        np.savez(os.path.join(folder, "state.npz"), **state)
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(meta, f)
        with np.load(os.path.join(folder, "state.npz"), allow_pickle=False) as saved:
            state = {key: saved[key] for key in saved.files}
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    return state, meta
