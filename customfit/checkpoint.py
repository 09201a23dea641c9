"""Checkpoints: one safetensors file per run, written atomically, read without running code.

A checkpoint is a flat dict name -> np.ndarray (weights, optimizer state) plus a JSON-able `meta`
dict, stored as JSON in the safetensors header's metadata. Writing goes to a temporary file in the
same folder, which is flushed and fsync'ed before `os.replace` puts it in place: a crash at any
moment leaves either the previous checkpoint or the new one, whole. The arrays carry a SHA-256
digest, so a file damaged after it was written is refused rather than half-loaded.

Imports NumPy and safetensors only (safetensors.numpy needs no framework).
"""

import hashlib
import io
import json
import os
import struct
import tempfile

import numpy as np

from customfit import faults
from customfit.errors import CheckpointError, WriteError

FORMAT = "customfit-checkpoint"
VERSION = 1
_META_KEY = "customfit"
_DIGEST_KEY = "customfit_sha256"
# safetensors caps its JSON header at 100 MB; a sane checkpoint's header is a few kB.
_MAX_HEADER = 100_000_000
# Temporary files are named .NAME.XXXXXXXX.tmp beside their file; a run removes what a killed one
# left (customfit.run_folder).
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path, data):
    """Write bytes (or str, as UTF-8) to `path` so that it is either the old file or the new one,
    never a part of it: temp file in the same folder, flush, fsync, os.replace, fsync the folder.
    A write that fails (disk full, ...) removes its temporary file and raises WriteError."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(
            dir=folder, prefix=TEMP_PREFIX + os.path.basename(path) + ".", suffix=TEMP_SUFFIX
        )
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode_for(path))
            half = len(data) // 2
            f.write(data[:half])
            faults.halfway_through_writing(path)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            # Disk full, a quota, a file-size limit: one line naming the file; the old file stays.
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    _fsync_folder(folder)


def atomic_save_npy(path, array):
    """Write `array` to `path` as .npy (no pickle), whole or not at all; returns the path."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write(path, buffer.getvalue())
    return path


def _mode_for(path):
    """The existing file's permissions, else what open() would give (mkstemp's are 0600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(name.encode("utf-8"))
        h.update(str(a.dtype).encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _to_bytes(arrays, meta):
    if not isinstance(meta, dict):
        raise TypeError(f"checkpoint meta must be a dict; got {type(meta).__name__}")
    tensors = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"checkpoint array names must be non-empty strings; got {name!r}")
        array = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        if array.dtype == object:
            raise TypeError(
                f"checkpoint array {name!r} has dtype object; only numeric arrays are stored"
            )
        tensors[name] = array
    header_meta = {
        _META_KEY: json.dumps({"format": FORMAT, "version": VERSION, **meta}),
        _DIGEST_KEY: _digest(tensors),
    }
    import safetensors.numpy

    return safetensors.numpy.save(tensors, metadata=header_meta)


def save(path, arrays, meta):
    """Write `arrays` (name -> np.ndarray) and `meta` (JSON-able dict) to one safetensors file,
    atomically. The previous file at `path`, if any, stays whole until the new one replaces it."""
    atomic_write(path, _to_bytes(arrays, meta))


def _corrupt(path, why):
    return CheckpointError.expected(
        "checkpoint", "a customfit checkpoint (safetensors)", given=f"{path}, which {why}"
    )


def load(path):
    """(arrays, meta) from a file written by `save`. Parses data only (safetensors: a JSON header
    and raw array bytes), never code. Anything missing, unreadable, truncated, altered or not
    written by customfit raises CheckpointError, whose message is one line."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _corrupt(path, "does not exist") from None
    except IsADirectoryError:
        raise _corrupt(path, "is a folder") from None
    except OSError as e:
        raise _corrupt(path, f"cannot be read ({e.strerror or e})") from None

    if len(data) < 8:
        raise _corrupt(path, f"is too short to be one ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise _corrupt(path, "is truncated or not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "is not a safetensors file (unreadable header)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or _META_KEY not in metadata:
        raise _corrupt(path, "has no customfit metadata")
    try:
        meta = json.loads(metadata[_META_KEY])
    except (TypeError, ValueError):
        raise _corrupt(path, "has unreadable customfit metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _corrupt(path, "has no customfit metadata")
    if meta.get("version") != VERSION:
        raise _corrupt(path, f"has format version {meta.get('version')!r}, not {VERSION}")

    import safetensors.numpy

    try:
        arrays = safetensors.numpy.load(data)
    except Exception as e:  # SafetensorError and whatever a damaged file provokes
        raise _corrupt(path, f"is damaged ({' '.join(str(e).split())})") from None
    if metadata.get(_DIGEST_KEY) != _digest(arrays):
        raise _corrupt(path, "is damaged (its arrays do not match their checksum)")
    meta.pop("format", None)
    meta.pop("version", None)
    return arrays, meta
