import os
import shutil
import tempfile

import pytest

# tests/keras_core needs KERAS_BACKEND fixed for its whole process: test_keras_core.py runs it
# once per backend in a subprocess, which sets CUSTOMFIT_BACKEND_SUITE.
if os.environ.get("CUSTOMFIT_BACKEND_SUITE") != "1":
    collect_ignore = ["keras_core"]


_jax_cache = None  # the session's JAX compilation cache, where this process made it


def pytest_configure(config):
    """One JAX compilation cache for every process of the session, both test workers' and
    every run they start: JAX compiles each program in each process (the initializers of a
    model the suite builds in a dozen files took 1-8 s each on this CPU), and a program one
    process compiled, another now loads: the same executable, so the same numbers. The test
    workers inherit it from the controller, which makes it and removes it at the end."""
    global _jax_cache
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    _jax_cache = tempfile.mkdtemp(prefix="customfit-tests-jax-cache-")
    # No size limit, JAX's default: a limit turns on eviction, and with it a lock held while
    # every write lists and reads the whole folder (0.2 s a write at 1500 entries; Keras's suite
    # on JAX took 157 s with it, 73 s without). Unlocked, a process that reads an entry while
    # another writes it may find it cut short: JAX warns and compiles the program itself.
    os.environ.update(
        JAX_COMPILATION_CACHE_DIR=_jax_cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def pytest_collection_modifyitems(items):
    """The heaviest test files first (tests/file_seconds.py says why), each file's tests in
    their own order; pyproject.toml turns off xdist's reordering by number of tests."""
    from file_seconds import measured

    seconds = measured()
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))


def pytest_unconfigure(config):
    if _jax_cache:
        shutil.rmtree(_jax_cache, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def warm_servers():
    """The warm forkservers this test worker started (tests/warm.py) end with the session."""
    yield
    import warm

    warm.close_all()
