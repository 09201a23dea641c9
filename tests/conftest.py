import os

# tests/keras_core needs KERAS_BACKEND fixed for its whole process: test_keras_core.py runs it
# once per backend in a subprocess, which sets CUSTOMFIT_BACKEND_SUITE.
if os.environ.get("CUSTOMFIT_BACKEND_SUITE") != "1":
    collect_ignore = ["keras_core"]
