"""MNIST as its authors distribute it: a folder of four IDX files (train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; gzipped or not, with
'-' or '.' before "idx", as the many mirrors and packages name them), read into mnist.npz's four
arrays. The format: two zero bytes, a type byte (0x08: unsigned bytes), the number of axes, each
axis's length as a big-endian int32, then the values."""

import gzip
import os

import numpy as np

from customfit.errors import UsageError

FILES = {
    "x_train": ("train-images", 3),
    "y_train": ("train-labels", 1),
    "x_test": ("t10k-images", 3),
    "y_test": ("t10k-labels", 1),
}
UNSIGNED_BYTE = 0x08


def names(stem, axes):
    return [f"{stem}{sep}idx{axes}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]


def read_folder(folder):
    """{x_train, y_train, x_test, y_test} from the four IDX files in `folder`, as uint8."""
    arrays = {}
    for key, (stem, axes) in FILES.items():
        found = [
            os.path.join(folder, n)
            for n in names(stem, axes)
            if os.path.isfile(os.path.join(folder, n))
        ]
        if not found:
            raise UsageError.expected(
                "data",
                f"MNIST's four IDX files in {folder!r} (train-images-idx3-ubyte, "
                "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
                given=f"no {stem}-idx{axes}-ubyte there",
            )
        arrays[key] = read_file(found[0], axes)
    return arrays


def read_file(path, axes):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    header = 4 + 4 * axes
    if len(raw) < header or raw[0] != 0 or raw[1] != 0 or raw[2] != UNSIGNED_BYTE or raw[3] != axes:
        raise UsageError.expected(
            "data",
            f"an IDX file of unsigned bytes with {axes} axes",
            given=f"{path!r}, whose header is {raw[:4].hex() or 'empty'}",
        )
    shape = tuple(int(n) for n in np.frombuffer(raw[4:header], dtype=">i4"))
    if len(raw) - header != int(np.prod(shape)):
        raise UsageError.expected(
            "data",
            f"{int(np.prod(shape))} values after {path!r}'s header (shape {shape})",
            given=f"{len(raw) - header}",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
