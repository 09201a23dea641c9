"""`customfit compare FILE.py:FACTORY --data BATCH.npz`: one cf.Model on several Keras backends,
each in its own process, from the same weights and random draws, against a float64 reference;
exit status 0 when they agree, 1 when they differ (naming where), 2 on bad input.

By default: one example on the three backends through the command line; two known differences
(|w| and clip at their kinks) caught and named; the bad inputs, each one line and exit 2 (most
before any backend starts). Slow: every lecture task's Keras model and every example agree."""

import ast
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from customfit import cli, registry
from customfit.comparison import diff, launch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "workers" / "compare_models.py"
EXAMPLES = ROOT / "examples"


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("KERAS_BACKEND", None)
    return env


def customfit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "customfit", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _npz(folder, name="batch.npz", **arrays):
    path = Path(folder) / name
    np.savez(path, **arrays)
    return str(path)


def _snapshot(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- the examples


def example_factory(name, folder):
    """A copy of examples/NAME.py without its training: every top-level statement but those that
    fit, predict, evaluate, print or assert (and those that use what they made), then
    `factory()` returning the example's model. Its module-level arrays are left to the test."""
    source = (EXAMPLES / f"{name}.py").read_text()
    dropped, kept = set(), []
    for node in ast.parse(source).body:
        text = ast.get_source_segment(source, node)
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        calls = {
            n.func.attr
            for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        }
        printing = any(isinstance(n, ast.Name) and n.id == "print" for n in ast.walk(node))
        if (
            isinstance(node, ast.Assert)
            or printing
            or calls & {"fit", "predict", "evaluate"}
            or (used & dropped)
        ):
            if isinstance(node, ast.Assign):
                dropped.update(
                    n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)
                )
            continue
        kept.append(text)
    model = "attack" if name == "targeted_perturbation" else "model"
    path = Path(folder) / f"{name}_factory.py"
    path.write_text("\n".join(kept) + f"\n\n\ndef factory():\n    return {model}\n")
    return f"{path}:factory"


def example_batch(name, folder):
    """A batch that fits the example's model (its shapes, its kind of data), made with NumPy."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    arrays = {
        "robust_regression": lambda: {
            "x": rng.uniform(-2, 2, (64, 1)).astype(f32),
            "y": rng.normal(size=(64, 1)).astype(f32),
        },
        "energy_forces": lambda: {
            "x": (
                np.array([[0, 0], [1, 0], [1, 1], [0, 1]], f32) + 0.15 * rng.normal(size=(64, 4, 2))
            ).astype(f32),
            "y": rng.normal(size=(64, 4, 2)).astype(f32),
        },
        "sliced_score_matching": lambda: {"x": rng.normal(size=(128, 2)).astype(f32)},
        "targeted_perturbation": lambda: {
            "x": rng.uniform(0, 1, (100, 64)).astype(f32),
            "y": rng.integers(0, 10, 100).astype("int32"),
        },
        "vae": lambda: {"x": rng.uniform(0, 1, (64, 64)).astype(f32)},
        "wgan_gp": lambda: {"x": rng.normal(size=(256, 2)).astype(f32)},
    }[name]()
    return _npz(folder, f"{name}.npz", **arrays)


def test_a_gradient_zero_in_exact_arithmetic_is_held_to_its_updates_scale():
    # keras-io's masked autoencoder: its attention key biases get a gradient that is zero in
    # exact arithmetic (softmax ignores a shift common to every key); each backend's is rounding
    # noise, 1e-12 to 1e-10, which relative to its own largest entry differed by 1.2.
    reference = {
        "loss/gradient/key/bias": np.array([6e-12, 2e-12]),
        "loss/gradient/kernel": np.array([0.02, -0.01]),
        "loss/gradient/small": np.array([2e-6, 1e-6]),
    }
    noisy = dict(reference, **{"loss/gradient/key/bias": np.array([-7e-11, 4e-12])})
    worst, table = diff.compare({"tensorflow": noisy}, reference)
    assert table["loss/gradient/key/bias"]["tensorflow"] == pytest.approx(7.6e-11 / 2e-5)
    assert worst["tensorflow"].relative < 1e-4
    # A small but real gradient computed wrong (twice too large) still differs by far.
    doubled = dict(reference, **{"loss/gradient/small": np.array([4e-6, 2e-6])})
    worst, table = diff.compare({"torch": doubled}, reference)
    assert table["loss/gradient/small"]["torch"] == pytest.approx(2e-6 / 2e-5)
    assert worst["torch"].key == "loss/gradient/small"


def test_an_example_agrees_on_the_three_backends(tmp_path):
    out = tmp_path / "result.json"
    proc = customfit(
        "compare",
        example_factory("robust_regression", tmp_path),
        "--data",
        example_batch("robust_regression", tmp_path),
        "--steps",
        "5",
        "--json",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["backend", "objective"]
    assert [line.split()[0] for line in lines[1:5]] == ["tensorflow", "torch", "jax", "float64"]
    assert lines[-2].startswith("agree: every backend within rtol 0.0001 of the float64 reference")
    assert "fastest: " in lines[-2]
    assert lines[-3].startswith("random draws: keras.random's normal, uniform")
    found = json.loads(out.read_text())
    assert found["agree"] is True and found["exit_status"] == 0
    assert set(found["worst"]) == {"tensorflow", "torch", "jax"}
    for backend, worst in found["worst"].items():
        assert worst["relative"] < 1e-4, (backend, worst)
        assert found["speed"][backend]["steps"] == 5
        assert found["speed"][backend]["steps_per_second"] > 0
        assert found["speed"][backend]["batch_size"] == 64
    # each entry of the objective's dict, training on and off, and a gradient per variable
    keys = set(found["differences"])
    assert {"loss/training/loss", "loss/training/mae", "loss/inference/inliers"} <= keys
    assert sum(k.startswith("loss/gradient/") for k in keys) == 6  # three Dense: kernel, bias
    assert found["fastest"] in found["speed"]


# ----------------------------------------------------------------------------- differences


def test_known_backend_differences_are_caught_and_named(tmp_path, capsys):
    batch = _npz(tmp_path, x=np.ones((4, 2), np.float32))
    out = tmp_path / "kinks.json"
    status = cli.main(
        [
            "compare",
            f"{MODELS}:kinks",
            "--data",
            batch,
            "--backends",
            "torch",
            "jax",
            "--steps",
            "2",
            "--json",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert status == 1, stdout
    verdict = stdout.splitlines()[-2]
    assert verdict.startswith("DIFFER beyond rtol 0.0001 from the float64 reference"), verdict
    assert (
        "torch by 1 at the gradient of the objective's loss w.r.t. kinks/w[0] "
        "(torch 0, jax 1, float64 1), and at kinks/c"
    ) in verdict
    assert "jax by" not in verdict
    found = json.loads(out.read_text())
    assert found["exit_status"] == 1
    assert found["differences"]["loss/gradient/kinks/w"] == {"torch": 1.0, "jax": 0.0}
    assert found["differences"]["loss/gradient/kinks/c"] == {"torch": 0.5, "jax": 0.0}
    assert found["differences"]["loss/gradient/kinks/v"]["torch"] < 1e-6
    assert found["worst"]["torch"]["values"] == {"torch": 0.0, "jax": 1.0, "float64": 1.0}


@pytest.mark.slow
def test_tensorflow_maximum_at_a_tie_is_caught(tmp_path, capsys):
    batch = _npz(tmp_path, x=np.ones((4, 2), np.float32))
    status = cli.main(["compare", f"{MODELS}:ties", "--data", batch, "--steps", "2"])
    verdict = capsys.readouterr().out.splitlines()[-1]
    assert status == 1
    assert (
        "tensorflow by 0.5 at the gradient of the objective's loss w.r.t. ties/m[0] "
        "(tensorflow 1, torch 0.5, jax 0.5, float64 0.5)"
    ) in verdict
    assert "torch by" not in verdict and "jax by" not in verdict


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(folder):
    good = _npz(folder, x=np.ones((4, 2), np.float32))
    target = f"{MODELS}:kinks"
    return {
        "no file": (
            ["missing.py:build", "--data", good],
            "FILE.py:FACTORY: expected FILE.py:FACTORY, a Python file and a function in it "
            "returning a cf.Model; got 'missing.py', which does not exist",
        ),
        "no factory": (
            [f"{MODELS}:nowhere", "--data", good],
            "which defines no 'nowhere' at its top level",
        ),
        "no colon": ([str(MODELS), "--data", good], "FILE.py:FACTORY: expected FILE.py:FACTORY"),
        "no batch": (
            [target, "--data", "missing.npz"],
            "--data: expected an .npz file holding the arrays fit() would get: x, y, "
            "sample_weight (x at least); got 'missing.npz', which does not exist",
        ),
        "no x": ([target, "--data", _npz(folder, "z.npz", z=np.ones(3))], "which holds z"),
        "rows": (
            [target, "--data", _npz(folder, "rows.npz", x=np.ones((4, 2)), y=np.ones(3))],
            "--data: expected arrays with as many rows as x; got x 4 rows, y 3 rows",
        ),
        "backend": (
            [target, "--data", good, "--backends", "mxnet"],
            "--backends: expected one of tensorflow, torch, jax; got 'mxnet'",
        ),
        "json": (
            [target, "--data", good, "--json", str(Path(folder) / "no" / "out.json")],
            "--json: expected a file in an existing folder",
        ),
        "rtol": ([target, "--data", good, "--rtol", "0"], "--rtol: expected a positive number"),
        "no data flag": ([target], "missing: --data"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no file",
        "no factory",
        "no colon",
        "no batch",
        "no x",
        "rows",
        "backend",
        "json",
        "rtol",
        "no data flag",
        "not installed",
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_backend_starts(
    case, tmp_path, capsys, monkeypatch
):
    def started(*args, **kwargs):
        raise AssertionError("a backend was started")

    monkeypatch.setattr(launch, "run", started)
    monkeypatch.chdir(tmp_path)
    cases = _bad_inputs(tmp_path)
    cases["not installed"] = (
        cases["backend"][0][:-1] + ["torch"],
        "--backends: expected a backend whose framework is installed "
        "(pip install 'customfit[torch]'); got 'torch' without torch installed",
    )
    if case == "not installed":
        monkeypatch.setattr(
            registry, "missing_modules", lambda engine: ["torch"] if engine == "keras-torch" else []
        )
    args, expected = cases[case]
    before = _snapshot(tmp_path)
    with (
        pytest.raises(SystemExit) if case in ("rtol", "no data flag") else contextlib.nullcontext()
    ):
        status = cli.main(["compare", *args])
        assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("customfit: error: "), captured.err
    assert expected in lines[0], lines[0]
    assert captured.out == ""
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "factory, data, expected",
    [
        (
            "not_a_model",
            (4, 2),
            "customfit: error: FILE.py:FACTORY: expected not_a_model to return a "
            "cf.Model; got NotAModel",
        ),
        (
            "kinks",
            (4, 3),
            "customfit: error: --data: expected arrays that fit the model; its objective raised",
        ),
    ],
)
def test_a_factory_or_batch_the_backend_refuses_is_one_line_exit_2(
    factory, data, expected, tmp_path, capsys
):
    batch = _npz(tmp_path, x=np.ones(data, np.float32))
    out = tmp_path / "out.json"
    status = cli.main(
        ["compare", f"{MODELS}:{factory}", "--data", batch, "--backends", "jax", "--json", str(out)]
    )
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith(expected), captured.err
    assert not out.exists()


# ----------------------------------------------------------------------------- slow: all of them

EXAMPLE_NAMES = (
    "robust_regression",
    "vae",
    "wgan_gp",
    "targeted_perturbation",
    "energy_forces",
    "sliced_score_matching",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_agrees_on_the_three_backends(name, tmp_path, capsys):
    status = cli.main(
        ["compare", example_factory(name, tmp_path), "--data", example_batch(name, tmp_path)]
    )
    stdout = capsys.readouterr().out
    with capsys.disabled():  # the table, for docs/compare.md
        print(f"\n== {name}\n{stdout}")
    assert status == 0, stdout


LECTURE = {  # family: (task, fit()'s arrays)
    "classifier": ("digits", ("x", "y")),
    "adversarial": ("adversarial", ("x", "y")),
    "vae": ("vae", ("x",)),
    "gan": ("gan", ("x",)),
    "score": ("score", ("x",)),
}
LECTURE_FACTORY = """
import keras
import numpy as np

from customfit import options, registry


def model(task):
    spec = registry.spec(task)
    settings = registry.defaults(spec, spec.DEFAULTS["model"])
    settings.update(options.resolve(spec, {}))
    engine = "keras-" + keras.backend.backend()
    trainer = spec.build_trainer(registry.trainer_class(task, engine), spec.load(), settings)
    return getattr(trainer, "gan", None) or trainer.model


def nudged(built):
    # Off the kink: the GAN's zero biases on blank pixels put its leaky ReLUs exactly at 0, where
    # JAX's gradient is 1, TensorFlow's and torch's the slope (customfit/parity.py nudges
    # the weights for the same reason); test_the_gan_as_built_sits_on_a_kink shows it caught.
    rng = np.random.default_rng(0)
    for v in built.trainable_variables:
        value = keras.ops.convert_to_numpy(v.value)
        if not value.any():
            v.assign(value + rng.normal(0.0, 0.01, value.shape).astype(value.dtype))
    return built


def gan_as_built():
    return model("gan")
"""


@pytest.mark.slow
@pytest.mark.parametrize("family", list(LECTURE))
def test_every_lecture_task_agrees_on_the_three_backends(family, tmp_path, capsys):
    task, names = LECTURE[family]
    factory = tmp_path / "lecture.py"
    built = f"nudged(model({task!r}))" if family == "gan" else f"model({task!r})"
    factory.write_text(LECTURE_FACTORY + f"\n\ndef {family}():\n    return {built}\n")
    split = registry.spec(task).load()
    arrays = {"x": split.x_train[:32]}
    if "y" in names:
        arrays["y"] = split.y_train[:32]
    batch = _npz(tmp_path, **arrays)
    status = cli.main(["compare", f"{factory}:{family}", "--data", batch, "--steps", "10"])
    stdout = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n== {family}\n{stdout}")
    assert status == 0, stdout


@pytest.mark.slow
def test_the_gan_as_built_sits_on_a_kink(tmp_path, capsys):
    factory = tmp_path / "lecture.py"
    factory.write_text(LECTURE_FACTORY)
    batch = _npz(tmp_path, x=registry.spec("gan").load().x_train[:32])
    status = cli.main(["compare", f"{factory}:gan_as_built", "--data", batch, "--steps", "2"])
    verdict = capsys.readouterr().out.splitlines()[-1]
    assert status == 1, verdict
    for backend in ("tensorflow", "torch"):
        assert (
            f"{backend} by 0.31 at the gradient of update dis's loss w.r.t. dis/conv2d/bias"
            in verdict
        )
    assert "jax by" not in verdict
