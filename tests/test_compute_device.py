"""`--device cpu|gpu` (customfit/compute_device.py): the choice per engine and task, the refusals
in one line, and bench's CPU/GPU script on its CPU path (this machine has no GPU: the GPU half
of benchmarks/gpu.sh runs only where a framework sees one)."""

import json
import os
import subprocess
import sys

import pytest

from customfit import compute_device
from customfit.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_table  # noqa: E402


def _env(tmp_path):
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "no-keras-home"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    return env


def customfit(*args, tmp_path):
    return subprocess.run(
        [sys.executable, "-m", "customfit", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def sees_gpu(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        compute_device, "framework_sees_gpu", lambda engine: seen.get(engine, False)
    )
    return seen


def test_the_default_is_the_gpu_where_the_engine_can_use_one(sees_gpu):
    assert compute_device.choose("digits", "keras-jax", None) == "cpu"
    sees_gpu.update({e: True for e in ("keras-jax", "torch", "tensorflow")})
    assert compute_device.choose("digits", "keras-jax", None) == "gpu"
    assert compute_device.choose("mnist", "torch", None) == "gpu"
    assert compute_device.choose("vae", "tensorflow", None) == "gpu"
    # the native torch Trainers outside the classifier family keep their tensors on the CPU
    assert compute_device.choose("vae", "torch", None) == "cpu"
    assert compute_device.choose("digits", "torch", None, devices=2) == "cpu"
    sees_gpu["keras-torch"] = True
    assert compute_device.choose("digits", "keras-torch", None, devices=2) == "cpu"
    assert compute_device.choose("digits", "keras-torch", None) == "gpu"
    assert compute_device.choose("digits", "keras-jax", "cpu") == "cpu"
    assert compute_device.choose(None, "torch", "gpu") == "gpu"  # bench's workloads


def test_gpu_is_refused_in_one_line_where_it_cannot_be_had(sees_gpu):
    sees_gpu["torch"] = True
    cases = [
        (
            ("vae", "torch", "gpu"),
            "device: expected cpu for task vae on torch (the native torch "
            "engine computes on a GPU for toy, digits, mnist); got 'gpu'",
        ),
        (
            ("digits", "keras-torch", "gpu", 2),
            "device: expected cpu with --devices 2 on "
            "keras-torch (its processes spread over the CPU, "
            "through gloo); got 'gpu'",
        ),
        (
            ("digits", "flax", "gpu"),
            "device: expected cpu, or gpu on a machine where jax sees "
            "one; got gpu (jax sees no GPU here)",
        ),
        (("digits", "flax", "GPU"), "device: expected one of cpu, gpu; got 'GPU'"),
    ]
    for args, expected in cases:
        with pytest.raises(UsageError) as info:
            compute_device.use(*args)
        assert str(info.value) == expected


def test_cpu_hides_the_gpus_before_the_framework_starts(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setattr(compute_device, "_current", {"device": "gpu"})
    assert compute_device.use("digits", "keras-jax", "cpu") == "cpu"
    assert os.environ["JAX_PLATFORMS"] == "cpu" and not compute_device.on_gpu()
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert compute_device.use("digits", "torch", "cpu") == "cpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"


def test_run_refuses_a_gpu_it_cannot_see_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here: the refusal is for a machine without one")
    proc = customfit(
        "run", "digits", "--engine", "torch", "--device", "gpu", "--out", "o", tmp_path=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "customfit: error: --device: expected cpu, or gpu on a machine where "
        "torch sees one; got gpu (torch sees no GPU here)\n"
    )
    assert not (tmp_path / "o").exists()


def test_the_cpu_gpu_table_from_two_bench_records():
    def record(cells, **extra):
        return {
            "date": "2026-11-29",
            "machine": {"cpu": "c", "cpu_count": 2, "platform": "p"},
            "cells": [
                {"default_mode": True, "batch_size": 32, "precision": "float32", **c} for c in cells
            ],
            **extra,
        }

    cpu = record(
        [
            {"task": "mnist", "engine": "torch", "steps_per_second": 10.0, "device": "cpu"},
            {"task": "mnist", "engine": "keras-jax", "steps_per_second": 20.0, "device": "cpu"},
        ]
    )
    gpu = record(
        [
            {"task": "mnist", "engine": "torch", "steps_per_second": 150.0, "device": "gpu"},
            {
                "task": "mnist",
                "engine": "torch",
                "steps_per_second": 300.0,
                "device": "gpu",
                "precision": "mixed_float16",
            },
        ],
        gpu="H200",
    )
    text = gpu_table.table(cpu, gpu)
    assert "| mnist | 32 | torch | 10.0 | 150.0 | 15.00 | 300.0 | 2.00 |" in text
    assert "| mnist | 32 | keras-jax | 20.0 | - | - | - | - |" in text
    assert "GPU: H200" in text
    alone = gpu_table.table(cpu)
    assert "| mnist | 32 | torch | 10.0 | - | - |" in alone and "only the CPU column" in alone


def test_gpu_script_runs_its_cpu_half_here(tmp_path):
    """benchmarks/gpu.sh with the tests' Python (nothing installed), one engine and task, a tiny
    bench."""
    env = dict(
        _env(tmp_path),
        GPU_SH_PYTHON=sys.executable,
        GPU_SH_ENGINES="torch",
        GPU_SH_TASKS="mnist",
        GPU_SH_BENCH="--batch-sizes 16 --steps 1 --repeats 5 --compiled off",
    )
    import torch

    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), str(tmp_path / "g")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cells = json.loads((tmp_path / "g" / "cpu" / "bench.json").read_text())["cells"]
    assert [(c["task"], c["engine"], c["device"]) for c in cells] == [("mnist", "torch", "cpu")]
    table = (tmp_path / "g" / "cpu_gpu.md").read_text()
    mnist = next(c for c in cells if c["task"] == "mnist")
    assert f"| mnist | 16 | torch | {mnist['steps_per_second']:,.1f} |" in table
    if torch.cuda.is_available():
        assert (tmp_path / "g" / "gpu" / "bench.json").exists()
    else:
        assert "none visible to torch, TensorFlow or JAX here" in proc.stdout
        assert not (tmp_path / "g" / "gpu").exists()


def test_bench_refuses_a_gpu_it_cannot_see_and_leaves_no_folder(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here: the refusal is for a machine without one")
    proc = customfit(
        "bench",
        "--tasks",
        "digits",
        "--engines",
        "torch",
        "--device",
        "gpu",
        "--out",
        "b",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "customfit: error: --device: expected cpu, or gpu on a machine "
        "where torch sees one; got gpu (torch sees no GPU here)\n"
    )
    assert not (tmp_path / "b").exists()
