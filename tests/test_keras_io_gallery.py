"""examples/keras_io/: keras-io's examples that override train_step, each rewritten from its
method as one short script whose model is a cf.Model, running unchanged on the tensorflow, torch
and jax backends and ending by asserting the figure it must reach.

By default each runs briefly (CUSTOMFIT_QUICK=1: a small share of the data, an epoch or two, a
loose bar), all of them in one process per backend (tests/workers/example_worker.py), the three
backends side by side. The slow tests run each in full, in its own process, and hold it to its
full bar; and `customfit compare` runs each model on the three backends from the same weights.

MNIST comes from ../shared/data/mnist (or $CUSTOMFIT_MNIST) where it is there; elsewhere from a
stand-in in MNIST's layout made from scikit-learn's digits (customfit/tasks/mnist/standin.py),
which the brief runs' loose bars are set for, and the slow runs skip, saying why.
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from example_workers import BACKENDS, check_brief_run, run_briefly_side_by_side

from customfit import cli
from customfit.tasks.mnist import standin

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "keras_io"
BENCHMARK = ROOT / "benchmarks" / "gallery.py"  # the full runs
SHARED = ("gallery",)  # the gallery's own helpers, not an example
NAMES = tuple(sorted(p.stem for p in GALLERY.glob("*.py") if p.stem not in SHARED))
REAL_MNIST = os.environ.get("CUSTOMFIT_MNIST") or str(ROOT.parent / "shared" / "data" / "mnist")


def _env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(GALLERY)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def _mnist(folder):
    """The real MNIST where it is here, else a stand-in written to `folder`: (path, is_real)."""
    if os.path.exists(REAL_MNIST):
        return REAL_MNIST, True
    return standin.write(folder / "standin-mnist.npz", n_train=1400, n_test=397), False


def _full_runs():
    """benchmarks/gallery.py, which runs a script in full, imported by a name of its own
    (`gallery` is the scripts' helpers)."""
    spec = importlib.util.spec_from_file_location("gallery_full_runs", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source(name):
    return (GALLERY / f"{name}.py").read_text()


def test_the_gallery_has_at_least_ten_keras_io_examples():
    assert len(NAMES) >= 10, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_is_a_short_keras_io_style_script(name):
    source = _source(name)
    tree = ast.parse(source)
    header = ast.get_docstring(tree)
    for field in ("Title:", "keras-io:", "Description:", "Shows:", "Result:", "Run:"):
        assert re.search(rf"^{field} \S", header, re.M), f"{name}: no {field} in its header"
    assert "from gallery import" in source or "import gallery" in source, name
    assert "KERAS_BACKEND" not in source.replace("KERAS_BACKEND=jax python", ""), (
        f"{name} must not choose its backend"
    )
    assert "tensorflow" not in re.sub(r'""".*?"""', "", source, flags=re.S), (
        f"{name} must not import a framework: keras.ops only"
    )
    assert len(source.splitlines()) <= 250, f"{name}: {len(source.splitlines())} lines"
    # Importable (compare and bench build its model without training it): the training under
    # `if __name__ == "__main__":`, which ends by asserting the example's figure.
    main = tree.body[-1]
    assert isinstance(main, ast.If) and "__main__" in ast.unparse(main.test), name
    assert isinstance(main.body[-1], ast.Assert), f"{name} does not end on an assert"
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"make_model", "example_batch"} <= names, f"{name}: make_model/example_batch missing"


@pytest.fixture(scope="module")
def quick_reports(tmp_path_factory):
    """backend -> {example: report, "_lines": {example: its reported line}}, from one worker per
    backend, the three side by side."""
    folder = tmp_path_factory.mktemp("gallery")
    mnist, _ = _mnist(folder)

    def env_of(backend):
        env = _env(backend, OMP_NUM_THREADS="1", CUSTOMFIT_MNIST=str(mnist))
        env["CUSTOMFIT_GALLERY_OUT"] = str(folder / f"{backend}.jsonl")
        return env

    scripts = [str(GALLERY / f"{name}.py") for name in NAMES]
    reports = run_briefly_side_by_side(scripts, folder, env_of, timeout=1200)
    for backend, report in reports.items():
        lines = folder / f"{backend}.jsonl"
        report["_lines"] = (
            {r["example"]: r for r in map(json.loads, lines.read_text().splitlines())}
            if lines.exists()
            else {}
        )
    return reports


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_briefly_and_reaches_its_quick_bar(name, backend, quick_reports):
    check_brief_run(quick_reports, name, backend)
    line = quick_reports[backend]["_lines"].get(name)
    assert line is not None and np.isfinite(line["value"]), f"{name} reported no figure"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_example_in_full_reaches_its_bar(name, backend, tmp_path):
    mnist, real = _mnist(tmp_path)
    if not real and "gallery.mnist()" in _source(name):
        pytest.skip(f"the full run needs the real MNIST: {REAL_MNIST} is absent")
    proc = _full_runs().run_in_full(name, backend, mnist, tmp_path, figures=tmp_path, timeout=1800)
    assert proc.returncode == 0, (
        f"{name} on {backend}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    print((tmp_path / "line.jsonl").read_text())


# Where float32's own rounding of a model's numbers reaches past compare's default rtol (1e-4),
# and why; measured 2026-12-07, worst of the three backends against float64 in brackets.
COMPARE_RTOL = {
    # Its noise-level features are sin(2 pi f v) with f up to 1000 (keras-io's): rounding the
    # angle to float32 moves them by up to 2 pi 1000 u = 3.7e-4 (1.1e-4 to 1.5e-4 measured).
    "ddim": 1e-3,
    # Its "consistency" entry is a KL divergence between two nearly equal distributions (the
    # EMA teacher starts as the student), 3e-5, summed from terms of order 1 (2.9e-4 measured).
    "consistency_training": 1e-3,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_model_agrees_on_the_three_backends(name, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(GALLERY))
    batch = tmp_path / "batch.npz"
    code = (
        f"import numpy as np, runpy; ns = runpy.run_path({str(GALLERY / (name + '.py'))!r}); "
        f"np.savez({str(batch)!r}, **ns['example_batch']())"
    )
    subprocess.run(
        [sys.executable, "-c", code], env=_env("jax"), check=True, cwd=tmp_path, timeout=300
    )
    monkeypatch.setenv("PYTHONPATH", _env("jax")["PYTHONPATH"])
    rtol = ["--rtol", str(COMPARE_RTOL[name])] if name in COMPARE_RTOL else []
    target = f"{GALLERY / (name + '.py')}:make_model"
    status = cli.main(["compare", target, "--data", str(batch), *rtol])
    stdout = capsys.readouterr().out
    with capsys.disabled():  # the table, for docs/gallery.md
        print(f"\n== {name}\n{stdout}")
    assert status == 0, stdout


def test_the_gallery_page_is_what_the_results_give():
    """docs/gallery.md is generated from the scripts' headers and the full runs' results
    (benchmarks/results/gallery.jsonl): `python docs/make_gallery.py` writes it again."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_gallery.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = (ROOT / "docs" / "gallery.md").read_text()
    for name in NAMES:
        assert f"## {name.replace('_', '-')}" in page, f"{name} has no section on the page"
