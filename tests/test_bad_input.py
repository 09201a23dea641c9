"""Bad input, as a new user gives it: one line on stderr, exit status 2, no traceback, and no file
or folder made.

The three inputs that once got tracebacks (two of them leaving an empty folder) are run as real
commands. Then hypothesis draws command lines from every command's flags (list, run, demo,
matrix, report; each task's own options) with at least one bad value: wrong types, extreme
numbers, odd paths, odd .npz files. These run in this process through customfit.cli.main, in a
fresh folder each, with training and the matrix's runs replaced by a failure: a drawn command
line that got past the checks fails the test instead of training. Bounded in the default run
(derandomized, so CI sees the same examples); many more under `slow`.
"""

import contextlib
import io
import os
import string
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from customfit import cli, matrix, registry
from customfit.runs import launch, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    return env


def _tree(folder):
    found = set()
    for base, dirs, files in os.walk(folder):
        found |= {os.path.relpath(os.path.join(base, n), folder) + "/" for n in dirs}
        found |= {os.path.relpath(os.path.join(base, n), folder) for n in files}
    return found


# ----------------------------------------------------------------------------- the three


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--lr", "1e308"],
            "customfit: error: --lr: expected a positive number that float32 holds "
            "(1.18e-38 to 3.4e+38); got '1e308'",
        ),
        (
            ["--out", "/proc/x"],
            "customfit: error: --out: expected a folder that can be made and "
            "written; got '/proc/x' (No such file or directory)",
        ),
        (
            ["--batch-size", "99999999999999999999"],
            "customfit: error: --batch-size: expected an integer > 0 and at most 2**63 - 1; "
            "got '99999999999999999999'",
        ),
    ],
)
def test_the_inputs_that_once_got_tracebacks(flags, expected, tmp_path):
    argv = ["run", "toy", "--engine", "torch", *flags]
    proc = subprocess.run(
        [sys.executable, "-m", "customfit", *argv],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, expected + "\n", "")
    assert os.listdir(tmp_path) == [], "a folder was left behind"


# ----------------------------------------------------------------------------- drawn command lines


WORDS = st.text(alphabet=string.ascii_letters + "_./:@%+=", min_size=1, max_size=12).filter(
    lambda s: not s.startswith("-")
)
HUGE = st.integers(min_value=2**63, max_value=10**40)


def bad_count():
    """Not an integer > 0 that a framework can index with."""
    return st.one_of(
        st.integers(max_value=0).map(str),
        HUGE.map(str),
        WORDS,
        st.floats(allow_nan=True, allow_infinity=True)
        .filter(lambda x: x != x or abs(x) == float("inf") or not float(x).is_integer())
        .map(repr),
        st.sampled_from(["1e3", "2.5", "", "nan", "inf", "-inf", "0x10", "1_e2"]),
    )


def bad_seed():
    return st.one_of(
        st.integers(max_value=-1).map(str),
        st.integers(min_value=2**32, max_value=10**30).map(str),
        WORDS,
        st.sampled_from(["1.5", "", "nan", "1e9"]),
    )


def bad_lr():
    return st.one_of(
        st.floats(max_value=0.0).map(repr),
        st.floats(min_value=3.5e38, max_value=1e308).map(repr),
        st.floats(min_value=5e-324, max_value=1e-39).map(repr),
        WORDS.filter(_not_a_number),
        st.sampled_from(["nan", "inf", "-inf", "", "1e400", "-0"]),
    )


def _not_a_number(text):
    try:
        float(text)
        return False
    except ValueError:
        return True


def _option_bad_values(option):
    if option.kind == "choice":
        return WORDS.filter(lambda w: w not in option.choices)
    if option.kind == "int":
        outside = []
        if option.low is not None:
            outside.append(st.integers(max_value=int(option.low) - 1).map(str))
        if option.high is not None:
            outside.append(st.integers(min_value=int(option.high) + 1).map(str))
        return st.one_of(*outside, WORDS, st.sampled_from(["1.5", "nan", ""]))
    if option.kind == "float":
        outside = [
            st.sampled_from(["nan", "inf", "-inf", "1e400", ""]),
            WORDS.filter(_not_a_number),
        ]
        if option.low is not None:
            low = float(option.low)
            outside.append(st.floats(max_value=low, exclude_max=not option.low_open).map(repr))
        if option.high is not None:
            outside.append(
                st.floats(min_value=float(option.high), exclude_min=True, allow_infinity=False).map(
                    repr
                )
            )
        return st.one_of(*outside)
    return st.sampled_from(["missing-folder", "file.txt", "/proc/x", "", "empty-dir"])


BAD_OUT = st.sampled_from(
    [
        "/proc/x",
        "/proc/x/y",
        "file.txt",
        "file.txt/sub",
        "",
        "/dev/null",
        "/dev/null/x",
        "x" * 300,
        "ok/" + "y" * 300,
    ]
)
BAD_DATA_PATHS = st.sampled_from(
    [
        "missing.npz",
        "empty-dir",
        "/dev/null",
        "/dev/zero",
        "fifo",
        "empty.npz",
        "garbage.npz",
        "file.txt",
        "",
        "/proc/x",
    ]
)
MUTATIONS = (
    "drop",
    "shape",
    "nan",
    "inf",
    "label-high",
    "label-negative",
    "fraction",
    "length",
    "strings",
    "complex",
    "no-rows",
    "objects",
    "truncated",
    "scalar",
    "bool",
)


def odd_npz(draw, folder, task):
    """A data file for `task` with one thing wrong (MUTATIONS); returns its name."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 12))
    shape = (2,) if task == "toy" else (8, 8, 1)
    classes = 5 if task == "toy" else 10
    arrays = {
        "x_train": rng.random((n, *shape), dtype=np.float32),
        "y_train": rng.integers(0, classes, n),
        "x_test": rng.random((n, *shape), dtype=np.float32),
        "y_test": rng.integers(0, classes, n),
    }
    mutation = draw(st.sampled_from(MUTATIONS))
    key = draw(
        st.sampled_from(
            ["x_train", "x_test"]
            if mutation in ("shape", "nan", "inf", "strings", "complex", "no-rows", "scalar")
            else ["y_train", "y_test"]
            if mutation in ("label-high", "label-negative", "fraction", "length", "bool")
            else list(arrays)
        )
    )
    a = arrays[key]
    if mutation == "drop":
        del arrays[key]
    elif mutation == "shape":
        arrays[key] = rng.random((n, *shape, 2), dtype=np.float32)
    elif mutation in ("nan", "inf"):
        a.flat[draw(st.integers(0, a.size - 1))] = np.nan if mutation == "nan" else -np.inf
    elif mutation == "label-high":
        a[draw(st.integers(0, n - 1))] = classes + draw(st.integers(0, 10**6))
    elif mutation == "label-negative":
        a[draw(st.integers(0, n - 1))] = -draw(st.integers(1, 10**6))
    elif mutation == "fraction":
        arrays[key] = a + 0.5
    elif mutation == "length":
        arrays[key] = rng.integers(0, classes, n + draw(st.integers(1, 5)))
    elif mutation == "strings":
        arrays[key] = (
            np.array([["a"] * shape[0]] * n) if task == "toy" else np.full((n, 8, 8, 1), "x")
        )
    elif mutation == "complex":
        arrays[key] = a.astype(np.complex64)
    elif mutation == "no-rows":
        arrays[key] = np.zeros((0, *shape), np.float32)
    elif mutation == "objects":
        arrays[key] = np.array([{"not": "numbers"}] * n, dtype=object)
    elif mutation == "scalar":
        arrays[key] = np.float32(1.0)
    elif mutation == "bool":
        arrays[key] = np.ones(n, bool)
    name = f"odd-{mutation}.npz"
    np.savez(os.path.join(folder, name), **arrays)
    if mutation == "truncated":
        path = os.path.join(folder, name)
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: draw(st.integers(0, len(data) - 1))])
    return name


def _run_flags(draw, task, folder):
    """Good values for some of run's flags, and one bad one."""
    spec = registry.spec(task)
    good = {
        "--epochs": "2",
        "--batch-size": "16",
        "--lr": "0.001",
        "--seed": "3",
        "--model": draw(st.sampled_from(list(spec.MODELS))),
        "--out": "out",
    }
    flags = []
    for flag, value in good.items():
        if draw(st.booleans()):
            flags += [flag, value]
    if draw(st.booleans()):
        flags.append("--quiet")
    own = getattr(spec, "OPTIONS", {})
    bad_kinds = [
        "epochs",
        "batch",
        "lr",
        "seed",
        "model",
        "out",
        "data",
        "resume",
        "unknown",
        "other-option",
    ] + (["option"] if own else [])
    kind = draw(st.sampled_from(bad_kinds))
    if kind == "epochs":
        bad = ["--epochs", draw(bad_count())]
    elif kind == "batch":
        bad = ["--batch-size", draw(bad_count())]
    elif kind == "lr":
        bad = ["--lr", draw(bad_lr())]
    elif kind == "seed":
        bad = ["--seed", draw(bad_seed())]
    elif kind == "model":
        bad = ["--model", draw(WORDS.filter(lambda w: w not in spec.MODELS))]
    elif kind == "out":
        bad = ["--out", draw(BAD_OUT)]
    elif kind == "data":
        labelled = task in ("toy", "digits")
        odd = draw(st.booleans()) and labelled
        bad = ["--data", odd_npz(draw, folder, task) if odd else draw(BAD_DATA_PATHS)]
    elif kind == "resume":
        bad = ["--resume"]  # nothing to resume in a fresh folder
    elif kind == "unknown":
        bad = [
            draw(st.sampled_from(["--bogus", "--epoch", "--batch", "--learning-rate", "-x"])),
            "1",
        ]
    elif kind == "other-option":
        others = {
            n: o
            for t in registry.TASKS
            if t != task
            for n, o in getattr(registry.spec(t), "OPTIONS", {}).items()
            if n not in own
        }
        if not others:
            bad = ["--bogus"]
        else:
            name = draw(st.sampled_from(sorted(others)))
            bad = [others[name].cli_flag, "1"]
    else:
        name = draw(st.sampled_from(sorted(own)))
        bad = [own[name].cli_flag, draw(_option_bad_values(own[name]))]
    # The bad flag last: a good value of the same flag drawn before it would otherwise stand.
    return flags + bad


@st.composite
def command_lines(draw, folder):
    command = draw(
        st.sampled_from(["run", "run", "run", "demo", "matrix", "report", "list", "other"])
    )
    if command == "run":
        task = draw(st.sampled_from(registry.TASKS))
        engine = draw(st.sampled_from(registry.ENGINES))
        head = ["run", task, "--engine", engine]
        if draw(st.integers(0, 9)) == 0:  # a bad task or engine instead
            head = draw(
                st.sampled_from(
                    [
                        [
                            "run",
                            draw(WORDS.filter(lambda w: w not in registry.TASKS)),
                            "--engine",
                            engine,
                        ],
                        [
                            "run",
                            task,
                            "--engine",
                            draw(WORDS.filter(lambda w: w not in registry.ENGINES)),
                        ],
                        ["run", task],
                    ]
                )
            )
            return head
        return head + _run_flags(draw, task, folder)
    if command == "demo":
        flags = _run_flags(draw, "digits", folder)
        # demo has no --model, --data, --resume or task options: those are bad flags there too.
        return ["demo", *flags]
    if command == "matrix":
        bad = draw(st.sampled_from(["tasks", "engines", "epochs", "seed", "out", "unknown"]))
        flags = ["--tasks", "toy", "--engines", "torch", "--out", "m"]
        if bad == "tasks":
            flags += ["--tasks", draw(WORDS.filter(lambda w: w not in registry.TASKS))]
        elif bad == "engines":
            flags += ["--engines", "torch", draw(WORDS.filter(lambda w: w not in registry.ENGINES))]
        elif bad == "epochs":
            flags += ["--epochs", draw(bad_count())]
        elif bad == "seed":
            flags += ["--seed", draw(bad_seed())]
        elif bad == "out":
            flags += ["--out", draw(BAD_OUT)]
        else:
            flags += ["--bogus"]
        return ["matrix", *flags]
    if command == "report":
        return [
            "report",
            draw(
                st.sampled_from(["missing", "file.txt", "empty-dir", "/proc/x", "", "garbage.npz"])
            ),
        ]
    if command == "list":
        return ["list", draw(WORDS)]
    return [draw(WORDS.filter(lambda w: w not in cli.COMMANDS))]


def _must_not_run(*args, **kwargs):
    raise AssertionError(f"a bad command line got past the checks: {args!r:.300}")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(training, "train", _must_not_run)
    monkeypatch.setattr(launch, "in_subprocess", _must_not_run)
    monkeypatch.setattr(matrix, "run_all", _must_not_run)
    monkeypatch.setattr(cli, "cmd_list", _must_not_run)  # `list` takes no arguments


def _fixture_files(folder):
    with open(os.path.join(folder, "file.txt"), "w") as f:
        f.write("mine")
    open(os.path.join(folder, "empty.npz"), "wb").close()
    with open(os.path.join(folder, "garbage.npz"), "wb") as f:
        f.write(b"PK\x03\x04" + b"\x00" * 40)
    os.mkdir(os.path.join(folder, "empty-dir"))
    os.mkfifo(os.path.join(folder, "fifo"))


def check_bad_command_line(data):
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="customfit-fuzz-") as folder:
        _fixture_files(folder)
        argv = data.draw(command_lines(folder), label="argv")
        before = _tree(folder)
        err, out = io.StringIO(), io.StringIO()
        os.chdir(folder)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    status = cli.main(argv)
                except SystemExit as e:
                    status = e.code
        finally:
            os.chdir(here)
        lines = err.getvalue().splitlines()
        assert status == 2, (argv, status, err.getvalue())
        assert len(lines) == 1 and lines[0].startswith("customfit: error: "), (argv, err.getvalue())
        assert "Traceback" not in err.getvalue() and out.getvalue() == "", argv
        assert _tree(folder) == before, (argv, _tree(folder) ^ before)
        event(
            f"{argv[0]}: {lines[0].split(': ')[2]}"
        )  # what was refused, for --hypothesis-show-statistics


SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=150, derandomize=True, **SETTINGS)
@given(data=st.data())
def test_drawn_bad_command_lines_get_one_line_and_exit_2(no_training, data):
    check_bad_command_line(data)


@pytest.mark.slow
@settings(max_examples=3000, **SETTINGS)
@given(data=st.data())
def test_many_drawn_bad_command_lines_get_one_line_and_exit_2(no_training, data):
    check_bad_command_line(data)
