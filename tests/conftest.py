import os

import pytest

# tests/keras_core needs KERAS_BACKEND fixed for its whole process: test_keras_core.py runs it
# once per backend in a subprocess, which sets CUSTOMFIT_BACKEND_SUITE.
if os.environ.get("CUSTOMFIT_BACKEND_SUITE") != "1":
    collect_ignore = ["keras_core"]


@pytest.fixture(scope="session", autouse=True)
def warm_servers():
    """The warm forkservers this test worker started (tests/warm.py) end with the session."""
    yield
    import warm

    warm.close_all()
