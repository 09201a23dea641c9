"""Run every script in examples/ briefly (CUSTOMFIT_QUICK=1), one after another in this one
process, on the Keras backend this process was started with; tests/test_examples.py starts one
per backend, so that each framework is imported once rather than once per example.

    KERAS_BACKEND=jax python tests/workers/example_worker.py REPORT.json EXAMPLE.py ...

REPORT.json: {example name: {"status": "passed" | "failed", "seconds": s, "output": the last
lines printed, "error": the exception's last line}}, written as each example ends.
"""

import contextlib
import io
import json
import os
import runpy
import sys
import time
import traceback

os.environ["CUSTOMFIT_QUICK"] = "1"
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def main(report_path, scripts):
    import keras

    report = {}
    for script in scripts:
        name = os.path.splitext(os.path.basename(script))[0]
        keras.backend.clear_session()
        printed = io.StringIO()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(printed):
                runpy.run_path(script, run_name="__main__")
            status, error = "passed", None
        except BaseException as e:  # an example's own assert, or anything else it raised
            status = "failed"
            error = "".join(traceback.format_exception_only(type(e), e)).strip()
            printed.write(traceback.format_exc())
        report[name] = {
            "status": status,
            "seconds": time.perf_counter() - started,
            "output": printed.getvalue()[-3000:],
            "error": error,
            "backend": keras.backend.backend(),
        }
        with open(report_path, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
