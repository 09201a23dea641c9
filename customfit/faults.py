"""Fault injection: the tests' way to kill, interrupt or starve a run at a chosen point.

Nothing happens unless the environment variable CUSTOMFIT_FAULTS names faults, as
comma-separated ACTION@POINT entries:

    kill@step:2.57                SIGKILL this process after step 57 of epoch 2
    interrupt@step:1.10           send this process SIGINT (a Ctrl-C) after step 10 of epoch 1
    nan@step:3.1                  the figures the engine reported for that step become NaN
    kill@write:curves.png         SIGKILL halfway through writing curves.png (its temporary file
                                  half written, the old file untouched)
    enospc@write:checkpoint.safetensors#2
                                  the 2nd write of that file in this process fails halfway with
                                  "No space left on device"

Epochs and steps count from 1, as in the history and the progress bar; `#N` counts the writes of
a file name in this process (default 1). Each entry fires once. Unset, every hook is one lookup.
"""

import errno
import math
import os
import signal

VARIABLE = "CUSTOMFIT_FAULTS"
_ACTIONS = ("kill", "interrupt", "nan", "enospc")
_parsed = None


def _plan():
    global _parsed
    text = os.environ.get(VARIABLE, "")
    if _parsed is None or _parsed[0] != text:
        entries = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            action, _, point = item.partition("@")
            kind, _, where = point.partition(":")
            where, _, nth = where.partition("#")
            if action not in _ACTIONS or kind not in ("step", "write") or not where:
                raise ValueError(f"{VARIABLE}: cannot read {item!r}")
            entries.append(
                {
                    "action": action,
                    "kind": kind,
                    "where": where,
                    "nth": int(nth or 1),
                    "seen": 0,
                    "done": False,
                }
            )
        _parsed = (text, entries)
    return _parsed[1]


def _fire(entry):
    entry["done"] = True
    if entry["action"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif entry["action"] == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)


def after_step(epoch, step, logs):
    """Called by the run loop after every training step; returns the step's figures."""
    if not os.environ.get(VARIABLE):
        return logs
    for entry in _plan():
        if entry["kind"] == "step" and not entry["done"] and entry["where"] == f"{epoch}.{step}":
            _fire(entry)
            if entry["action"] == "nan":
                logs = {k: math.nan for k in logs}
    return logs


def halfway_through_writing(path):
    """Called by checkpoint.atomic_write when half of a file's bytes are in its temporary file."""
    if not os.environ.get(VARIABLE):
        return
    name = os.path.basename(os.fspath(path))
    for entry in _plan():
        if entry["kind"] == "write" and not entry["done"] and entry["where"] == name:
            entry["seen"] += 1
            if entry["seen"] == entry["nth"]:
                _fire(entry)
                if entry["action"] == "enospc":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
