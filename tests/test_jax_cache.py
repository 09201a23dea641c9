"""The tests' JAX compilation cache (tests/conftest.py) stays under its limit: the oldest
entries go first, once the folder holds more than the limit."""

import os

from conftest import trim


def _entries(folder, sizes):
    for age, size in enumerate(sizes):
        path = folder / f"entry{age}-cache"
        path.write_bytes(b"x" * size)
        os.utime(path, (1000 - age, 1000 - age))  # entry0 is the newest


def test_under_the_limit_nothing_goes(tmp_path):
    _entries(tmp_path, [100] * 10)
    trim(tmp_path, 1000)
    assert len(os.listdir(tmp_path)) == 10


def test_over_the_limit_the_oldest_go_down_to_three_quarters(tmp_path):
    _entries(tmp_path, [100] * 12)
    trim(tmp_path, 1000)
    assert sorted(os.listdir(tmp_path)) == sorted(f"entry{i}-cache" for i in range(7))
