"""`customfit bench` runs and writes its files (on a tiny setting: the bench is not a test, and
its numbers are read in benchmarks/results/, not asserted here); its flags are checked like run's."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("keras", "tensorflow", "torch", "jax", "flax", "optax")


def customfit(*args, cwd):
    env = dict(os.environ, KERAS_HOME=str(cwd / "no-keras-home"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "customfit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_bench_times_each_cell_and_writes_its_table(tmp_path):
    # Eager cells only (nothing to compile): keras-torch's default mode is eager, so its cells
    # still have their references beside them.
    proc = customfit(
        "bench",
        "--tasks",
        "digits",
        "penalty",
        "--engines",
        "flax",
        "keras-torch",
        "--batch-sizes",
        "16",
        "--steps",
        "1",
        "--repeats",
        "5",
        "--compiled",
        "off",
        "--out",
        "b",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    cells = {(c["task"], c["engine"]): c for c in result["cells"]}
    assert list(cells) == [
        ("digits", "flax"),
        ("penalty", "flax"),
        ("digits", "keras-torch"),
        ("penalty", "keras-torch"),
    ]
    assert all(c["mode"] == "eager" for c in cells.values())
    # a progress line per cell, numbered, as each finishes
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert cells[("penalty", "flax")]["skipped"] == "the penalty workload has no flax version"
    for key in (("digits", "flax"), ("digits", "keras-torch"), ("penalty", "keras-torch")):
        cell = cells[key]
        assert len(cell["seconds"]) == 5 and cell["steps"] == 1 and cell["batch_size"] == 16
        assert cell["steps_per_second"] == pytest.approx(1 / sorted(cell["seconds"])[2])
        assert cell["samples_per_second"] == pytest.approx(16 * cell["steps_per_second"])
        assert cell["default_mode"] == (key[1] == "keras-torch")
        assert cell["freed_memory_kept"] is True  # glibc here: customfit/cpu_memory.py
    assert "ratio" not in cells[("digits", "flax")]  # nnx.jit is flax's default, not eager
    # beside the default mode, the reference on the same backend, timed in turn with it
    for task, name in (
        ("digits", "stock Keras fit()"),
        ("penalty", "hand-written Keras train_step"),
    ):
        cell = cells[(task, "keras-torch")]
        assert cell["reference"]["name"] == name and len(cell["reference"]["seconds"]) == 5
        # the median of the pairs' ratios (each pair of passes timed in turn), and beside it
        # the ratio of the medians
        pairs = [t / m for m, t in zip(cell["seconds"], cell["reference"]["seconds"])]
        assert cell["ratio"] == pytest.approx(sorted(pairs)[2])
        assert cell["ratio_of_medians"] == pytest.approx(
            cell["steps_per_second"] / cell["reference"]["steps_per_second"]
        )
    # every engine's process held to one thread and one CPU, its cores reported beside it
    assert result["threads"]["per_process"] == 1
    md = (tmp_path / "b" / "bench.md").read_text()
    for engine in ("flax", "keras-torch"):
        process = result["processes"][engine]
        assert len(process["cpus"]) == 1 and process["in_effect"]["OMP_NUM_THREADS"] == "1"
        assert 0 < process["cpu_per_wall"] <= 1.05  # CPU seconds can't outrun one CPU
        assert f"| {engine} | {process['cpus'][0]} | {process['wall']:,.1f} |" in md
        assert f"{engine} process: {process['cpu_per_wall']:.2f} cores (CPU / wall)" in proc.stdout
    for key in (("digits", "flax"), ("digits", "keras-torch"), ("penalty", "keras-torch")):
        cell = cells[key]
        assert len(cell["cpu_seconds"]) == 5 and 0 < cell["cpu_per_wall"] <= 1.05
    assert 0 < cells[("digits", "keras-torch")]["reference"]["cpu_per_wall"] <= 1.05
    assert md in proc.stdout
    assert "\nFreed memory kept in each process for reuse (customfit/cpu_memory.py): yes.\n" in md
    ratio = cells[("digits", "keras-torch")]["ratio"]
    assert f"| digits | 16 | - | {ratio:.3f} | - | - | - | - |" in md


def test_mnist_cells_read_keras_cache_else_a_stand_in(monkeypatch, tmp_path):
    from customfit.bench.runner import mnist_data
    from customfit.tasks.mnist import spec, standin

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    path, note = mnist_data(None, str(tmp_path))
    assert path == str(tmp_path / "mnist-standin.npz")
    assert note == (
        "stand-in of MNIST's shape: scikit-learn digits scaled to 28x28 (no "
        f"{tmp_path / 'keras' / 'datasets' / 'mnist.npz'} on this machine)"
    )
    assert spec.read_data(path).x_train.shape == (1200, 28, 28, 1)
    (tmp_path / "keras" / "datasets").mkdir(parents=True)
    cache = standin.write(tmp_path / "keras" / "datasets" / "mnist.npz", 10, 5)
    assert mnist_data(None, str(tmp_path)) == (str(cache), f"MNIST (Keras's {cache})")
    assert mnist_data("mine.npz", str(tmp_path)) == ("mine.npz", "mine.npz")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tasks", "vae"], "--tasks: expected one of toy, digits, mnist, penalty; got 'vae'"),
        (["--engines", "jax"], "--engines: expected one of tensorflow, torch, flax"),
        (["--repeats", "3"], "--repeats: expected an integer >= 5; got '3'"),
        (["--batch-sizes", "32", "0"], "--batch-sizes: expected an integer > 0; got '0'"),
        (["--compiled", "yes"], "--compiled: expected one of on, off, both; got 'yes'"),
        (["--threads", "-1"], "--threads: expected an integer >= 0; got '-1'"),
        (
            ["--tasks", "digits", "--data", "x.npz"],
            "--data: expected no --data (it is mnist's, and --tasks has no mnist); got 'x.npz'",
        ),
        (["--tasks", "mnist", "--data", "x.npz"], "--data: expected an .npz file holding x_train"),
    ],
)
def test_bad_flags_are_one_line_and_write_nothing(args, expected, tmp_path):
    proc = customfit("bench", *args, "--out", "b", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"customfit: error: {expected}"), proc.stderr
    assert not (tmp_path / "b").exists()


def test_bench_help_imports_no_framework(tmp_path):
    code = (
        "import sys\nfrom customfit.cli import main\n"
        "try:\n    main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
    assert "--batch-sizes" in proc.stdout and "--compiled {on,off,both}" in proc.stdout


def test_threads_environment_and_clock():
    from customfit.bench import threads

    base = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "OMP_NUM_THREADS": "4"}
    assert threads.environment(None, base) == base
    env = threads.environment(2, base)
    assert env["XLA_FLAGS"] == base["XLA_FLAGS"]  # the host device count is left alone
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        assert env[name] == "2"
    clock = threads.Clock()
    end = time.process_time() + 0.05
    while time.process_time() < end:  # one busy thread, 0.05 s of CPU
        pass
    seconds = clock.read()
    assert 0.05 <= seconds["cpu"] <= seconds["wall"] + 0.001
    if seconds["runnable"] is not None:  # Linux: time on a CPU plus time queuing for one
        assert seconds["cpu"] - 0.02 <= seconds["runnable"] <= seconds["wall"] + 0.02
    figures = threads.cores(threads.add([seconds, seconds]))
    assert figures["cpu_per_wall"] == pytest.approx(seconds["cpu"] / seconds["wall"])
