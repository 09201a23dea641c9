"""The package as a user meets it: `python -m build` makes an sdist and a wheel that hold no tests,
runs or benchmarks, whose metadata carry the version of customfit/__init__.py, ranges (no exact
pins) and the frameworks as extras, and that `twine check` passes. The slow test installs the
wheel with only the `jax` extra into a clean virtual environment and uses it there."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import customfit
from customfit import registry

ROOT = Path(__file__).resolve().parent.parent
# What the build reads; the rest of the checkout (runs/, .venv, build outputs) stays behind.
COPIED = (
    "pyproject.toml",
    "LICENSE",
    "MANIFEST.in",
    "README.md",
    "constraints.txt",
    "customfit",
    "examples",
    "docs",
    "tests",
    "benchmarks",
)
EXTRAS = {"tensorflow", "tensorflow-cpu", "torch", "jax", "all", "test", "bench", "docs"}
FRAMEWORK_DISTS = {
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow_cpu",
    "torch",
    "jax",
    "jaxlib",
    "flax",
    "optax",
}


def _clean_env(**extra):
    """This process's environment without the PYTHONPATH that points at the checkout: the clean
    environment must import the installed wheel, and pip must not count the checkout as installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """(sdist, wheel) built by `python -m build` from a copy of the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        elif (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return sdists[0], wheels[0]


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode()


def test_the_version_lives_in_one_place():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "customfit.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", customfit.__version__)


def test_package_metadata_has_ranges_and_the_frameworks_only_as_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == EXTRAS
    every = project["dependencies"] + [r for reqs in extras.values() for r in reqs]
    assert [r for r in every if "==" in r or "===" in r] == []
    assert (
        not {re.split(r"[<>=!~;\[ ]", r)[0].lower() for r in project["dependencies"]}
        & FRAMEWORK_DISTS
    )
    assert extras["jax"] == ["jax>=0.10", "flax>=0.12", "optax>=0.2.8"]
    assert extras["all"] == ["customfit[tensorflow,torch,jax]"]
    # Every requirement the set-up installs is pinned exactly in constraints.txt.
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().split()
    }
    for requirement in every:
        name = re.split(r"[<>=!~;\[ ]", requirement)[0].lower()
        if name not in ("customfit", "tensorflow"):  # the set-up installs tensorflow-cpu
            assert name in pins, f"{name} has no exact version in constraints.txt"


def test_build_makes_an_sdist_and_a_wheel_without_tests_runs_or_benchmarks(dist):
    sdist, wheel = dist
    version = customfit.__version__
    assert wheel.name == f"customfit-{version}-py3-none-any.whl"
    assert sdist.name == f"customfit-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as z:
        in_wheel = z.namelist()
    tops = {n.split("/")[0] for n in in_wheel}
    assert tops == {"customfit", f"customfit-{version}.dist-info"}, tops
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "customfit").rglob("*.py")}
    assert package <= set(in_wheel), sorted(package - set(in_wheel))[:5]
    with tarfile.open(sdist) as t:
        in_sdist = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    assert not [n for n in in_sdist if n.split("/")[0] in ("tests", "benchmarks", "runs")]
    assert package <= set(in_sdist)
    metadata = _metadata(wheel)
    assert re.search(rf"^Version: {re.escape(version)}$", metadata, re.M)
    assert set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M)) == EXTRAS
    assert 'Requires-Dist: torch>=2.13; extra == "torch"' in metadata.splitlines()
    # A permissive licence, named in the metadata and shipped in the wheel.
    assert re.search(r"^License-Expression: MIT$", metadata, re.M), metadata[:800]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zipfile.ZipFile(wheel).namelist())


def test_twine_check_passes(dist):
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


# ----------------------------------------------------------------------------- a clean environment

FIT = textwrap.dedent("""
    import json
    import keras
    import numpy as np
    from keras import ops
    import customfit as cf

    class Line(cf.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def objective(self, data, training=True):
            x, y = data
            error = self(x) - y
            return {"loss": ops.mean(error ** 2), "mae": ops.mean(ops.abs(error))}

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(256, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3
    model = Line()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    print(json.dumps({"backend": keras.backend.backend(), "module": cf.__file__,
                      "first": history.history["loss"][0],
                      **model.evaluate(x, y, return_dict=True, verbose=0)}))
""")


@pytest.mark.slow
def test_a_clean_environment_with_only_the_jax_extra(dist, tmp_path):
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, script = venv / "bin" / "python", venv / "bin" / "customfit"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--find-links",
            str(wheel.parent),
            "-c",
            str(ROOT / "constraints.txt"),
            f"{wheel}[jax]",
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {
        p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)
    }
    assert installed["customfit"] == customfit.__version__
    assert {"jax", "flax", "optax", "keras"} <= set(installed)
    assert not {"torch", "tensorflow", "tensorflow-cpu"} & set(installed), (
        "a framework came uninvited"
    )

    work = tmp_path / "work"  # not the checkout: only the installed wheel is importable
    work.mkdir()

    def call(*args, **env):
        return subprocess.run(
            [str(a) for a in args],
            cwd=work,
            env=_clean_env(**env),
            capture_output=True,
            text=True,
            timeout=900,
        )

    imported = call(
        python,
        "-c",
        "import sys, customfit; print(customfit.__version__, "
        "customfit.__file__, sorted(m for m in sys.modules if m in "
        "('keras', 'jax', 'torch', 'tensorflow')))",
    )
    version, where, frameworks = imported.stdout.split(" ", 2)
    assert (imported.returncode, version) == (0, customfit.__version__), imported.stderr
    assert where.startswith(str(venv)) and frameworks.strip() == "[]"

    fit = call(python, "-c", FIT, KERAS_BACKEND="jax")
    assert fit.returncode == 0, fit.stderr[-3000:]
    figures = json.loads(fit.stdout.splitlines()[-1])
    assert figures["backend"] == "jax" and figures["module"].startswith(str(venv))
    assert figures["first"] > 1.0 and figures["loss"] < 1e-3 and figures["mae"] < 0.03, figures
    print(f"clean venv: cf.Model fit on jax, loss {figures['first']:.3f} -> {figures['loss']:.2e}")

    listing = call(script, "list")
    assert listing.returncode == 0, listing.stderr
    engines = {
        line.split()[0]: line
        for line in listing.stdout.splitlines()
        if line.startswith("  ") and line.split()[0] in registry.ENGINES
    }
    assert {e for e, line in engines.items() if "[unavailable" in line} == {
        "tensorflow",
        "torch",
        "keras-tensorflow",
        "keras-torch",
    }
    assert engines["torch"].endswith(
        "[unavailable: torch not installed; pip install 'customfit[torch]']"
    )

    toy = call(script, "run", "toy", "--engine", "keras-jax", "--out", "toy", "--quiet")
    assert toy.returncode == 0, toy.stdout + toy.stderr[-3000:]
    metrics = json.loads((work / "toy" / "metrics.json").read_text())
    assert metrics["passed"] and metrics["accuracy"] >= 0.99, metrics["accuracy"]
    assert metrics["versions"]["customfit"] == customfit.__version__
    print(f"clean venv: toy on keras-jax, accuracy {metrics['accuracy']:.4f}")

    for engine, extra in (("torch", "torch"), ("keras-tensorflow", "tensorflow")):
        refused = call(script, "run", "toy", "--engine", engine, "--out", engine)
        assert (refused.returncode, refused.stdout, refused.stderr.splitlines()) == (
            2,
            "",
            [
                f"customfit: error: --engine: expected an engine whose framework is installed (for "
                f"{engine}: pip install 'customfit[{extra}]'); got '{engine}' without "
                f"{engine.removeprefix('keras-')} installed"
            ],
        )
        assert not (work / engine).exists()
