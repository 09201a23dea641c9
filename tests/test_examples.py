"""examples/: six short scripts, each running unchanged on the tensorflow, torch and jax backends
and asserting its own result at the end (the number it must reach).

By default each runs briefly (CUSTOMFIT_QUICK=1: a few epochs, a loose bar), all six in one
process per backend (tests/workers/example_worker.py), the three backends side by side. The slow
tests run each one in full, in its own process, and hold it to its full bar.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from example_workers import BACKENDS, check_brief_run, run_briefly_side_by_side

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = (
    "robust_regression",
    "vae",
    "wgan_gp",
    "targeted_perturbation",
    "energy_forces",
    "sliced_score_matching",
)


def _env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def test_the_six_examples_are_short_keras_io_style_scripts():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(NAMES)
    for name in NAMES:
        source = (EXAMPLES / f"{name}.py").read_text()
        lines = source.splitlines()
        assert len(lines) < 120, f"{name}: {len(lines)} lines"
        header = ast.get_docstring(ast.parse(source))
        for field in ("Title:", "Description:", "Shows:", "Run:"):
            assert re.search(rf"^{field} \S", header, re.M), f"{name}: no {field} in its header"
        assert 'os.environ.get("CUSTOMFIT_QUICK") == "1"' in source, name
        # The script ends by asserting its own result.
        assert isinstance(ast.parse(source).body[-1], ast.Assert), (
            f"{name} does not end on an assert"
        )
        assert "KERAS_BACKEND" not in source.replace("KERAS_BACKEND=jax python", ""), (
            f"{name} must not choose its backend"
        )


@pytest.fixture(scope="module")
def quick_reports(tmp_path_factory):
    """backend -> {example: report}, from one worker per backend, the three side by side."""
    folder = tmp_path_factory.mktemp("examples")
    scripts = [str(EXAMPLES / f"{name}.py") for name in NAMES]
    return run_briefly_side_by_side(
        scripts, folder, lambda backend: _env(backend, OMP_NUM_THREADS="1"), timeout=900
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_briefly_and_reaches_its_quick_bar(name, backend, quick_reports):
    check_brief_run(quick_reports, name, backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_example_in_full_reaches_its_bar(name, backend, tmp_path):
    # One thread: on a shared 2-core machine PyTorch's second thread spins and runs 20x slower.
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=tmp_path,
        env=_env(backend, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, (
        f"{name} on {backend}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    print(f"{name} on {backend}: {proc.stdout.strip().splitlines()[-1]}")
