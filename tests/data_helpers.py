"""Data helpers only tests use: an epoch's permutation as the engines' shuffle seed gives it, and
an array written as an IDX file (MNIST's authors' format, the inverse of idx.read_file)."""

import gzip
import os

import numpy as np

from customfit.data import epoch_seed
from customfit.tasks.mnist.idx import UNSIGNED_BYTE


def epoch_permutation(n, seed, epoch):
    return np.random.default_rng(epoch_seed(seed, epoch)).permutation(n)


def write_idx_file(path, array):
    """`array` as an IDX file of unsigned bytes at `path` (gzipped where it ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
    return path
