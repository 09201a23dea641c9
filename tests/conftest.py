import contextlib
import os

import pytest

from customfit.tasks.digit_judge import cache_folder

# tests/keras_core needs KERAS_BACKEND fixed for its whole process: tests/keras_core_suite.py runs
# it once per backend in a subprocess, which sets CUSTOMFIT_BACKEND_SUITE.
if os.environ.get("CUSTOMFIT_BACKEND_SUITE") != "1":
    collect_ignore = ["keras_core"]


# JAX's compilation cache for the tests, kept between sessions as torch keeps its compiled
# kernels (/tmp/torchinductor_$USER), in the folder of customfit's own caches.
JAX_CACHE = os.path.join(cache_folder(), "jax-tests")
JAX_CACHE_LIMIT = 1 << 30  # bytes; a default run writes about 22 MB


def pytest_configure(config):
    """One JAX compilation cache for every process of every session, both test workers' and
    every run they start: JAX compiles each program in each process, and compiling was most of
    the CPU the JAX runs took (Keras's suite on JAX: 60 s of CPU with an empty cache, 24 s with
    the programs a session before had compiled). A program one process compiled, another loads:
    the same executable for the same jax, program and flags (JAX's key), so the same numbers.
    The test workers inherit it from the controller. JAX_COMPILATION_CACHE_DIR set beforehand
    wins: an empty folder there gives a run that compiles everything itself."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    try:
        os.makedirs(JAX_CACHE, exist_ok=True)
        trim(JAX_CACHE, JAX_CACHE_LIMIT)
    except OSError:
        return  # a home we cannot write: every process compiles for itself
    # No size limit for JAX itself: a limit turns on its eviction, and with it a lock held while
    # every write lists and reads the whole folder (0.2 s a write at 1500 entries; Keras's suite
    # on JAX took 157 s with it, 73 s without). The oldest entries go here instead, before the
    # workers start. Unlocked, a process that reads an entry while another writes it may find
    # it cut short: JAX warns and compiles the program itself.
    os.environ.update(
        JAX_COMPILATION_CACHE_DIR=JAX_CACHE,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def trim(folder, limit):
    """The oldest files out of `folder` until it holds at most 3/4 of `limit` bytes, once it
    holds more than `limit`."""
    entries = []
    for entry in os.scandir(folder):
        if entry.is_file():
            stat = entry.stat()
            entries.append((stat.st_mtime, stat.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return
    for _, size, path in sorted(entries):
        if total <= limit * 3 // 4:
            break
        with contextlib.suppress(OSError):
            os.remove(path)
            total -= size


def pytest_collection_modifyitems(items):
    """The heaviest test files first (tests/file_seconds.py says why), each file's tests in
    their own order; pyproject.toml turns off xdist's reordering by number of tests."""
    from file_seconds import measured

    seconds = measured()
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))


@pytest.fixture(scope="session", autouse=True)
def warm_servers():
    """The warm forkservers this test worker started (tests/warm.py) end with the session."""
    yield
    import warm

    warm.close_all()
