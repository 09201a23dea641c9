"""Checkpoints: atomic writes, exact round trips, one-line errors for anything unreadable."""

import json
import os
import struct

import numpy as np
import pytest

from customfit import checkpoint
from customfit.errors import CheckpointError, UsageError


def _arrays(scale=1.0):
    rng = np.random.default_rng(0)
    return {
        "weights.0": (scale * rng.normal(size=(3, 4))).astype(np.float32),
        "weights.1": np.arange(4, dtype=np.float32) * scale,
        "adam.step": np.array(7, dtype=np.int64),
        "flags": np.array([True, False]),
    }


META = {"task": "toy", "engine": "torch", "epoch": 2, "history": [{"epoch": 1, "loss": 0.5}]}


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, _arrays(), META)
    arrays, meta = checkpoint.load(path)
    assert meta == META
    expected = _arrays()
    assert sorted(arrays) == sorted(expected)
    for name in expected:
        assert arrays[name].dtype == expected[name].dtype
        assert arrays[name].shape == expected[name].shape  # 0-d stays 0-d
        np.testing.assert_array_equal(arrays[name], expected[name])


def test_a_write_that_fails_midway_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, _arrays(1.0), META)
    before = path.read_bytes()

    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        raise OSError(28, "No space left on device")

    # Half the bytes are already in the temporary file when fsync fails.
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, _arrays(2.0), {**META, "epoch": 3})
    monkeypatch.setattr(os, "fsync", real_fsync)

    assert calls, "the write never reached fsync"
    assert path.read_bytes() == before
    arrays, meta = checkpoint.load(path)
    assert meta["epoch"] == 2
    np.testing.assert_array_equal(arrays["weights.1"], np.arange(4, dtype=np.float32))
    assert os.listdir(tmp_path) == ["c.safetensors"], "the temporary file was left behind"


def test_a_write_interrupted_inside_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, _arrays(1.0), META)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfFile:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

        def flush(self):
            self.f.flush()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfFile(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, _arrays(2.0), {**META, "epoch": 3})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert checkpoint.load(path)[1]["epoch"] == 2
    assert os.listdir(tmp_path) == ["c.safetensors"]


def test_new_file_is_readable_by_others(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, _arrays(), META)
    # mkstemp makes 0600 files; a checkpoint gets the permissions open() would give it.
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~checkpoint._UMASK


def _one_line_error(path):
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, UsageError)
    assert "expected a customfit checkpoint" in message
    return message


def test_truncated_file(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, _arrays(), META)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    message = _one_line_error(path)
    assert "damaged" in message or "truncated" in message


def test_flipped_byte_in_the_arrays_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, _arrays(), META)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "checksum" in _one_line_error(path)


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "too short"),
        (b"\x00" * 4, "too short"),
        (b"not a checkpoint at all, just some text", "bad header length"),
        (struct.pack("<Q", 2) + b"{}", "no customfit metadata"),
        (struct.pack("<Q", 5) + b"\xff\xfe{}}", "unreadable header"),
    ],
)
def test_garbage(tmp_path, content, why):
    path = tmp_path / "c.safetensors"
    path.write_bytes(content)
    assert why in _one_line_error(path)


def test_pickle_is_not_a_checkpoint(tmp_path):
    import pickle

    path = tmp_path / "c.safetensors"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    _one_line_error(path)


def test_a_plain_safetensors_file_is_not_a_customfit_checkpoint(tmp_path):
    import safetensors.numpy

    path = tmp_path / "c.safetensors"
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, str(path), metadata={"x": "y"})
    assert "no customfit metadata" in _one_line_error(path)


def test_bad_customfit_metadata(tmp_path):
    import safetensors.numpy

    path = tmp_path / "c.safetensors"
    safetensors.numpy.save_file(
        {"w": np.ones(3, np.float32)}, str(path), metadata={"customfit": "{not json"}
    )
    assert "unreadable customfit metadata" in _one_line_error(path)
    safetensors.numpy.save_file(
        {"w": np.ones(3, np.float32)},
        str(path),
        metadata={"customfit": json.dumps({"format": "other"})},
    )
    assert "no customfit metadata" in _one_line_error(path)


def test_missing_file_and_folder(tmp_path):
    assert "does not exist" in _one_line_error(tmp_path / "nope.safetensors")
    assert "is a folder" in _one_line_error(tmp_path)


def test_object_arrays_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path / "c.safetensors", {"x": np.array([{}], dtype=object)}, {})
    assert not os.listdir(tmp_path)
