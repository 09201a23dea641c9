"""The command line: fast help and list without frameworks; every user mistake is one line on
stderr, exit status 2, no traceback, and nothing written."""

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from customfit import checkpoint, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("keras", "tensorflow", "torch", "jax", "flax", "optax")
TASKS_LINE = f"expected one of {', '.join(registry.TASKS)}"
ENGINES_LINE = "expected one of tensorflow, torch, flax, keras-tensorflow, keras-torch, keras-jax"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    return env


def customfit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "customfit", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _snapshot(folder):
    if not os.path.exists(folder):
        return None
    found = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def assert_usage_error(args, cwd, *expected_text, out="out"):
    out_dir = os.path.join(cwd, out)
    before = _snapshot(out_dir)
    proc = customfit(*args, cwd=cwd)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("customfit: error: "), lines[0]
    for text in expected_text:
        assert text in lines[0], (text, lines[0])
    assert proc.stdout == ""
    assert _snapshot(out_dir) == before, "the output folder changed"
    assert not os.path.exists(os.path.join(cwd, "runs")), "a default output folder was made"
    return lines[0]


# ----------------------------------------------------------------------------- speed
# Counted in CPU seconds (user + system), what a user waits for on an idle machine: a test
# machine busy with the other test workers stretches the wall time, not the work.


def _child_cpu_seconds(run):
    """run()'s result and the CPU seconds the child process it waited for took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize(
    "args", [["--help"], ["list"], ["run", "--help"], ["matrix", "--help"], []]
)
def test_help_and_list_are_fast_and_import_no_framework(args, tmp_path):
    code = (
        "import sys, time\n"
        "t = time.process_time()\n"
        "from customfit.cli import main\n"
        "try:\n"
        f"    status = main({args!r})\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
        "import json\n"
        "print(json.dumps([status, time.process_time() - t, loaded]))\n" % (FRAMEWORKS,)
    )
    proc, whole = _child_cpu_seconds(
        lambda: subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    )
    assert proc.returncode == 0, proc.stderr
    status, seconds, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status in (0, None)
    assert loaded == [], f"imported {loaded}"
    assert seconds < 2.0
    assert whole < 2.0 + 1.0  # the interpreter's own start-up on top
    assert not os.listdir(tmp_path)


def test_console_entry_point_answers_help_under_two_seconds(tmp_path):
    proc, seconds = _child_cpu_seconds(lambda: customfit("--help", cwd=tmp_path))
    assert seconds < 2.0
    assert proc.returncode == 0
    for command in ("list", "run", "matrix", "demo"):
        assert command in proc.stdout


def test_list_names_every_task_engine_and_judge(tmp_path):
    proc = customfit("list", cwd=tmp_path)
    assert proc.returncode == 0
    for task in registry.TASKS:
        spec = registry.spec(task)
        assert spec.JUDGE in proc.stdout
        for model in spec.MODELS:
            assert f"--model {model}" in proc.stdout
    for engine in registry.ENGINES:
        assert f"  {engine} " in proc.stdout
    assert "bar: accuracy >= 0.99" in proc.stdout
    assert "bar: accuracy >= 0.985" in proc.stdout
    assert "bar: accuracy >= 0.88" in proc.stdout


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "tof", "--engine", "torch"], [f"TASK: {TASKS_LINE}; got 'tof'"]),
        (["run", "--engine", "torch"], [f"TASK: {TASKS_LINE}; got nothing"]),
        (["run", "toy", "--engine", "tf"], [f"--engine: {ENGINES_LINE}; got 'tf'"]),
        (["run", "toy"], [f"--engine: {ENGINES_LINE}; got nothing"]),
        (
            ["run", "toy", "--engine", "torch", "--epochs", "0"],
            ["--epochs: expected an integer > 0; got '0'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--epochs", "-3"],
            ["--epochs: expected an integer > 0; got '-3'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--epochs", "two"],
            ["--epochs: expected an integer > 0; got 'two'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--batch-size", "0"],
            ["--batch-size: expected an integer > 0; got '0'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--batch-size", "-1"],
            ["--batch-size: expected an integer > 0; got '-1'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--lr", "0"],
            ["--lr: expected a positive number; got '0'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--lr", "-0.1"],
            ["--lr: expected a positive number; got '-0.1'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--lr", "nan"],
            ["--lr: expected a positive number; got 'nan'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--lr", "inf"],
            ["--lr: expected a positive number; got 'inf'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--lr", "fast"],
            ["--lr: expected a positive number; got 'fast'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--seed", "-1"],
            ["--seed: expected an integer >= 0; got '-1'"],
        ),
        (
            ["run", "toy", "--engine", "torch", "--model", "big"],
            ["--model: expected one of lecture (for task toy); got 'big'"],
        ),
        (
            ["run", "digits", "--engine", "flax", "--model", "tiny"],
            ["--model: expected one of default, lecture (for task digits); got 'tiny'"],
        ),
        (["run", "toy", "--engine", "torch", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["run", "toy", "--engine", "torch", "--epochs"], ["--epochs: expected one argument"]),
        (
            ["frobnicate"],
            [
                "COMMAND: expected one of list, run, matrix, bench, demo, report, compare; got 'frobnicate'"
            ],
        ),
        (
            ["matrix", "--engines", "torch", "tf", "--out", "out"],
            [f"--engines: {ENGINES_LINE}; got 'tf'"],
        ),
        (["matrix", "--tasks", "vea", "--out", "out"], [f"--tasks: {TASKS_LINE}; got 'vea'"]),
        (
            ["matrix", "--epochs", "0", "--out", "out"],
            ["--epochs: expected an integer > 0; got '0'"],
        ),
        (["demo", "--engine", "jaxx", "--out", "out"], [f"--engine: {ENGINES_LINE}; got 'jaxx'"]),
        (
            ["demo", "--batch-size", "0", "--out", "out"],
            ["--batch-size: expected an integer > 0; got '0'"],
        ),
    ],
)
def test_bad_flags(args, expected, tmp_path):
    if args[0] == "run" and "--out" not in args:
        args = args + ["--out", "out"]
    assert_usage_error(args, str(tmp_path), *expected)


def test_bad_flags_leave_the_default_folder_unmade(tmp_path):
    assert_usage_error(["run", "toy", "--engine", "torch", "--lr", "0"], str(tmp_path), "--lr")
    assert_usage_error(["demo", "--epochs", "0"], str(tmp_path), "--epochs")
    assert os.listdir(tmp_path) == []


def test_out_is_a_file(tmp_path):
    (tmp_path / "out").write_text("mine")
    line = assert_usage_error(["run", "toy", "--engine", "torch", "--out", "out"], str(tmp_path))
    assert (
        line
        == "customfit: error: --out: expected a folder (or a path where one can be made); got 'out', which is a file"
    )
    assert (tmp_path / "out").read_text() == "mine"


# ----------------------------------------------------------------------------- data


def _toy_arrays(n=40):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(n, 2)).astype(np.float32),
        "y_train": rng.integers(0, 5, size=n),
        "x_test": rng.normal(size=(n // 2, 2)).astype(np.float32),
        "y_test": rng.integers(0, 5, size=n // 2),
    }


def _write(tmp_path, **changes):
    arrays = {**_toy_arrays(), **changes}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(tmp_path / "data.npz", **arrays)
    return "data.npz"


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda a: {
                "x_train": np.where(np.arange(80).reshape(40, 2) == 7, np.nan, a["x_train"])
            },
            "--data: expected finite numbers in x_train; got 1 NaN value(s)",
        ),
        (
            lambda a: {"x_test": np.full((20, 2), np.inf, np.float32)},
            "--data: expected finite numbers in x_test; got 40 infinite value(s)",
        ),
        (
            lambda a: {"y_train": np.where(np.arange(40) == 3, 5, a["y_train"])},
            "--data: expected y_train as 40 integer labels in [0, 5); got 1 label(s) outside it",
        ),
        (
            lambda a: {"y_test": np.where(np.arange(20) == 0, -1, a["y_test"])},
            "--data: expected y_test as 20 integer labels in [0, 5); got 1 label(s) outside it (values from -1",
        ),
        (
            lambda a: {"y_train": a["y_train"] + 0.5},
            "--data: expected y_train as 40 integer labels in [0, 5); got labels with fractional parts",
        ),
        (
            lambda a: {"y_train": a["y_train"][:30]},
            "--data: expected y_train as 40 integer labels in [0, 5); got shape (30,)",
        ),
        (
            lambda a: {"x_train": np.zeros((40, 3), np.float32)},
            "--data: expected x_train of shape (N, 2) with N > 0; got shape (40, 3)",
        ),
        (
            lambda a: {"x_test": np.zeros((20, 2, 1), np.float32)},
            "--data: expected x_test of shape (N, 2) with N > 0; got shape (20, 2, 1)",
        ),
        (
            lambda a: {"y_test": None},
            "--data: expected an .npz file holding x_train, y_train, x_test, y_test; got 'data.npz', which lacks y_test",
        ),
    ],
)
def test_bad_data(make, expected, tmp_path):
    changes = make(_toy_arrays())
    path = _write(tmp_path, **changes)
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--data", path, "--out", "out"], str(tmp_path), expected
    )


def test_digits_data_of_the_wrong_shape(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x_train=np.zeros((10, 28, 28, 1), np.float32),
        y_train=np.zeros(10, int),
        x_test=np.zeros((5, 8, 8, 1), np.float32),
        y_test=np.zeros(5, int),
    )
    assert_usage_error(
        ["run", "digits", "--engine", "flax", "--data", "d.npz", "--out", "out"],
        str(tmp_path),
        "--data: expected x_train of shape (N, 8, 8, 1) with N > 0; got shape (10, 28, 28, 1)",
    )


def test_data_file_that_is_not_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--data", "d.npz", "--out", "out"],
        str(tmp_path),
        "--data: expected an .npz file holding",
        "which cannot be read",
    )
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--data", "missing.npz", "--out", "out"],
        str(tmp_path),
        "got 'missing.npz', which does not exist",
    )


# ----------------------------------------------------------------------------- resume


def _fake_checkpoint(folder, **meta):
    os.makedirs(folder, exist_ok=True)
    full = {
        "task": "toy",
        "engine": "torch",
        "model": "lecture",
        "config": {
            "epochs": 5,
            "batch_size": 10,
            "lr": 0.001,
            "seed": 0,
            "model": "lecture",
            "data": "built-in",
        },
        "data_sha256": None,
        "epoch": 1,
        "history": [
            {
                "epoch": 1,
                "loss": 1.0,
                "accuracy": 0.5,
                "val_loss": 1.0,
                "val_accuracy": 0.5,
                "seconds": 0.1,
            }
        ],
        "trainer": {},
    }
    full.update(meta)
    checkpoint.save(
        os.path.join(folder, "checkpoint.safetensors"), {"w": np.ones(3, np.float32)}, full
    )
    with open(os.path.join(folder, "history.csv"), "w") as f:
        f.write("epoch,loss\n1,1.0\n")


def test_resume_without_a_checkpoint(tmp_path):
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--out", "out", "--resume"],
        str(tmp_path),
        "--resume: expected a checkpoint to resume from; got no file out/checkpoint.safetensors",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content", [b"", b"garbage" * 20, b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":1}']
)
def test_resume_from_a_corrupt_checkpoint(tmp_path, content):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.safetensors").write_bytes(content)
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--out", "out", "--resume"],
        str(tmp_path),
        "--resume: expected a customfit checkpoint (safetensors); got out/checkpoint.safetensors, which",
    )


def test_resume_from_a_truncated_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path / "out")
    path = tmp_path / "out" / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:-5])
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--out", "out", "--resume"],
        str(tmp_path),
        "--resume: expected a customfit checkpoint (safetensors)",
        "damaged",
    )


@pytest.mark.parametrize(
    "meta, args, expected",
    [
        (
            {"engine": "flax"},
            ["toy", "--engine", "torch"],
            "--resume: expected a checkpoint of task toy, engine torch, model lecture; "
            "got out/checkpoint.safetensors, written by task toy, engine flax, model lecture",
        ),
        (
            {"task": "digits", "model": "default"},
            ["toy", "--engine", "torch"],
            "written by task digits, engine torch, model default",
        ),
        (
            {"task": "digits", "model": "default"},
            ["digits", "--engine", "torch", "--model", "lecture"],
            "expected a checkpoint of task digits, engine torch, model lecture; "
            "got out/checkpoint.safetensors, written by task digits, engine torch, model default",
        ),
        (
            {},
            ["toy", "--engine", "torch", "--batch-size", "32"],
            "--batch-size: expected 10 as in the checkpoint being resumed (or leave --batch-size out); got 32",
        ),
        (
            {},
            ["toy", "--engine", "torch", "--seed", "3"],
            "--seed: expected 0 as in the checkpoint being resumed (or leave --seed out); got 3",
        ),
        (
            {"epoch": 3, "history": [{"epoch": e} for e in (1, 2, 3)]},
            ["toy", "--engine", "torch", "--epochs", "2"],
            "--epochs: expected at least 3 (the checkpoint has trained 3 epochs); got 2",
        ),
        (
            {"history": []},
            ["toy", "--engine", "torch"],
            "--resume: expected a customfit run checkpoint; got out/checkpoint.safetensors, whose run metadata is incomplete",
        ),
    ],
)
def test_resume_from_another_run(tmp_path, meta, args, expected):
    _fake_checkpoint(tmp_path / "out", **meta)
    assert_usage_error(["run", *args, "--out", "out", "--resume"], str(tmp_path), expected)


def test_resume_with_other_data(tmp_path):
    _fake_checkpoint(tmp_path / "out")
    path = _write(tmp_path)
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--out", "out", "--resume", "--data", path],
        str(tmp_path),
        "--data: expected the built-in data to resume this checkpoint; got other data",
    )


# ----------------------------------------------------------------------------- the Python API


def test_python_api_raises_the_same_one_line_errors(tmp_path):
    import customfit as cf
    from customfit.errors import UsageError

    cases = [
        (("toy", "tf"), {}, f"engine: {ENGINES_LINE}; got 'tf'"),
        (("mnist-ish", "torch"), {}, f"task: {TASKS_LINE}; got 'mnist-ish'"),
        (("toy", "torch"), {"epochs": 0}, "epochs: expected an integer > 0; got 0"),
        (("toy", "torch"), {"epochs": True}, "epochs: expected an integer > 0; got True"),
        (("toy", "torch"), {"batch_size": 2.5}, "batch_size: expected an integer > 0; got 2.5"),
        (("toy", "torch"), {"lr": float("nan")}, "lr: expected a positive number; got nan"),
        (("toy", "torch"), {"lr": "0.1x"}, "lr: expected a positive number; got '0.1x'"),
        (
            ("toy", "torch"),
            {"epoch": 3},
            "config: expected keys among epochs, batch_size, lr, seed, "
            "model, out, resume, data, verbose, tensorboard, devices, "
            "precision, device; got 'epoch'",
        ),
        (
            ("toy", "torch"),
            {"data": (np.zeros((4, 2)), np.array([0, 1, 2, 9]), np.zeros((2, 2)), np.zeros(2))},
            "data: expected y_train as 4 integer labels in [0, 5); got 1 label(s) outside it (values from 0 to 9)",
        ),
        (
            ("toy", "torch"),
            {"data": (np.zeros((4, 2)), np.zeros(4))},
            "data: expected an .npz path or a tuple (x_train, y_train, x_test, y_test); got tuple of length 2",
        ),
    ]
    for args, config, expected in cases:
        with pytest.raises(UsageError) as info:
            cf.run(*args, out=str(tmp_path / "out"), **config)
        assert str(info.value) == expected
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- matrix


def test_matrix_runs_each_pair_in_its_own_process_and_writes_its_table(tmp_path):
    proc = customfit(
        "matrix", "--tasks", "toy", "--engines", "flax", "--epochs", "2", "--out", "m", cwd=tmp_path
    )
    report = json.loads((tmp_path / "m" / "matrix.json").read_text())
    (row,) = report["rows"]
    assert row["status"] in ("passed", "below bar"), row
    assert proc.returncode == (0 if row["status"] == "passed" else 1), proc.stderr
    metrics = json.loads((tmp_path / "m" / "toy-flax" / "metrics.json").read_text())
    assert (
        row["headline"] == "accuracy" and row["value"] == metrics["accuracy"] and row["epochs"] == 2
    )
    md = (tmp_path / "m" / "matrix.md").read_text()
    assert f"| toy | lecture | flax | accuracy | {metrics['accuracy']:.4f} | >= 0.99 |" in md
    assert md in proc.stdout
    assert (tmp_path / "m" / "logs" / "toy-flax.log").exists()


def test_data_is_refused_by_a_task_without_labels(tmp_path):
    path = _write(tmp_path)
    assert_usage_error(
        ["run", "vae", "--engine", "torch", "--out", "out", "--data", path],
        str(tmp_path),
        "--data: expected no --data (task vae trains on its built-in data); got a data file",
    )
