"""`--devices N`: N devices take the step one device takes, on every engine, for the digits
classifier and for the GAN (two optimizers); bad input is one line and exit status 2; a run on
2 devices reaches the digits bar on every engine (slow).

The equality runs are in tests/workers/devices_worker.py, one process per engine (JAX's device
count and TensorFlow's logical CPUs are fixed per process; the torch engines' N devices are N
processes of their own). On this CPU the devices are the frameworks' own: 2 XLA host devices, 2
TensorFlow logical CPUs, 2 gloo processes.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import warm

from customfit import cli, devices, registry
from worker_jobs import reports_of

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers"))
import devices_worker  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "workers", "devices_worker.py")
DEVICES = 2
# digits and the GAN (two optimizers) in the default run; the VAE (its reparameterisation noise
# paired with its samples across devices) under slow.
TASKS = ("digits", "gan", pytest.param("vae", marks=pytest.mark.slow))
# N devices against one: one step from the same state on the same global batch (one update per
# optimizer; tests/workers/devices_worker.py's JOBS), each array within a tolerance derived
# from float32's unit roundoff and the magnitudes it compares (devices_worker.one_step: the
# averaged gradients, Adam's moments, batch statistics and losses to K u = 2.4e-4 of each
# array's largest magnitude, K = 4096 the longest sum; each weight to Adam's update's slope
# times that gradient tolerance). The figures asserted are fractions of that tolerance.
# Measured 2026-12-07 (2 devices, Intel Xeon with AVX-512, default kernels and every setting in
# tests/kernel_settings.md), the worst figure of a run as a fraction of its tolerance T: digits
# 0.011 to 0.022 (a weight whose gradient is near zero, Adam's steepest slope), its averaged
# gradients 3.0e-7 to 2.0e-6 relative (at most 0.008 T); the GAN (lr 0: its moments and batch
# statistics) 2.7e-4 T (torch engines) to 0.12 T (tensorflow: 2.9e-5 relative, the generator's
# one output bias, a sum over 32 x 64 pixels); the VAE (slow) 0.015 to 0.036.
# One kink crossing (tensorflow GAN, ONEDNN_MAX_CPU_ISA=SSE41): 102 T on its first batch, 0.008
# T on the next (devices_worker.TRIES). Broken on purpose once each (tensorflow, patched in the
# worker's process only, not committed): gradients summed instead of averaged, 4100 T (Adam's
# first moments doubled) in digits, the GAN and the VAE; the same latents on every replica,
# 27600 T on the GAN's first moments (7300 T its batch statistics) and 3100 T on the VAE's (its
# noise); batch norm not synchronized, 7200 T on the GAN's first moments (7300 T statistics).
TOLERANCE = devices_worker.TOLERANCE
# The slowest workers start first (two at a time on the 2 cores).
SLOWEST_FIRST = ("keras-torch", "flax", "keras-jax", "torch", "keras-tensorflow", "tensorflow")


def _run_worker(engine, tasks, folder):
    job = {
        "engine": engine,
        "devices": DEVICES,
        "tasks": tasks,
        "output": str(folder / f"devices-{engine}.json"),
    }
    path = folder / f"job-{engine}.json"
    path.write_text(json.dumps(job))
    env = dict(
        os.environ,
        KERAS_BACKEND=registry.KERAS_BACKEND[engine],
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=ROOT,
    )
    env.setdefault("OMP_NUM_THREADS", "1")  # the test workers share the two cores
    done = warm.run(
        [WORKER, str(path)], backend=env["KERAS_BACKEND"], env=env, cwd=ROOT, timeout=900
    )
    if done.returncode != 0:
        return {"failed": f"worker for {engine} exited {done.returncode}:\n{done.stderr[-4000:]}"}
    with open(job["output"]) as f:
        return json.load(f)


def _selected(session):
    """engine -> the tasks its selected tests ask for, slowest engines first."""
    asked = [
        (item.callspec.params["engine"], item.callspec.params["task"])
        for item in session.items
        if item.originalname == "test_n_devices_train_as_one_device"
    ]
    return {
        e: [t for t in ("digits", "gan", "vae") if (e, t) in asked]
        for e in SLOWEST_FIRST
        if any(e == engine for engine, _ in asked)
    }


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    if devices.most() < DEVICES:
        pytest.skip(f"this machine makes {devices.most()} device(s); the test needs {DEVICES}")
    folder = tmp_path_factory.mktemp("devices")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {
        e: pool.submit(_run_worker, e, tasks, folder)
        for e, tasks in _selected(request.session).items()
    }

    yield reports_of(futures)
    pool.shutdown(wait=True)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_n_devices_train_as_one_device(results, engine, task):
    """From the same weights, on the same global batch: one step on 2 devices (each optimizer's
    update once) leaves the state one step on one device leaves, to rounding (see TOLERANCE),
    and the step's losses are the same."""
    report = results(engine)[task]
    assert report["placement"] == [1, DEVICES], report["placement"]  # it did spread
    # Shown with pytest -rP: each try's worst figure (a second try only where the first missed,
    # devices_worker.TRIES), then the passing try's worst figure of each kind.
    print(f"{task} on {engine}: tries {report['tries']}; {report['state']['kinds']}")
    assert report["state"]["worst"]["ratio"] <= 1, report["state"]
    assert report["history"]["relative"] <= TOLERANCE, report["history"]
    # A step that did nothing cannot pass: every network has a gradient, and where lr > 0 the
    # step moved the weights (Adam's first update moves a weight whose gradient is well above
    # epsilon by nearly lr; the GAN steps with lr 0, see devices_worker.JOBS).
    for network in {k.split("/")[0] for k in report["first_moments"]}:
        assert max(v for k, v in report["first_moments"].items() if k.startswith(network)) > 0
    lr = devices_worker.JOBS[task]["lr"]
    assert report["moved"]["max_abs"] >= lr / 2, report["moved"]
    if engine in devices.TORCH_ENGINES:
        # The processes hold the same weights and optimizer state, bit for bit.
        assert [b["max_abs"] for b in report["between_processes"]] == [0.0] * (DEVICES - 1)
    # Batch norm (the GAN's) on the torch engines normalizes each process's share with its own
    # statistics (torch's SyncBatchNorm is GPU-only, Keras has none on torch): the GAN there is
    # held to a one-device run that does the same, its running statistics left out.
    per_share = engine in devices.TORCH_ENGINES and task == "gan"
    assert report["reference"] == ("per share" if per_share else "one device")
    assert report["compared"] == report["arrays"] - (6 if per_share else 0)


# ---------------------------------------------------------------- bad input

SPREADING = ", ".join(devices.tasks_that_can())


def test_the_families_that_spread():
    assert {registry.spec(t).FAMILY for t in devices.tasks_that_can()} == {
        "classifier",
        "gan",
        "vae",
    }
    assert [t for t in registry.TASKS if t not in devices.tasks_that_can()] == [
        "adversarial",
        "score",
        "score-digits",
    ]


def _main(capsys, *argv):
    try:
        status = cli.main(list(argv))
    except SystemExit as e:  # argparse's own checks exit
        status = e.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ("run", "digits", "--engine", "torch", "--devices", "0"),
            "customfit: error: --devices: expected an integer > 0; got '0'",
        ),
        (
            ("run", "digits", "--engine", "flax", "--devices", "two"),
            "customfit: error: --devices: expected an integer > 0; got 'two'",
        ),
        (
            ("run", "digits", "--engine", "keras-jax", "--devices", str(devices.most() + 1)),
            f"customfit: error: --devices: expected at most {devices.most()} on this machine "
            f"({devices.cores()} CPU cores, one device each); got {devices.most() + 1}",
        ),
        (
            ("run", "adversarial", "--engine", "torch", "--devices", "2"),
            "customfit: error: --devices: expected 1 for task adversarial (tasks that train on several "
            f"devices: {SPREADING}); got 2",
        ),
        (
            ("run", "gan", "--engine", "tensorflow", "--devices", "2", "--batch-size", "63"),
            "customfit: error: --batch-size: expected a multiple of --devices 2 (each device takes an "
            "equal share of a batch); got 63",
        ),
    ],
)
def test_bad_devices_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.setattr(devices, "cores", lambda: 2)  # the same message on any machine
    out = tmp_path / "run"
    status, err = _main(capsys, *argv, "--out", str(out))
    assert (status, err) == (2, message + "\n")
    assert not out.exists()


def test_devices_must_match_the_processes_torchrun_started(capsys, tmp_path, monkeypatch):
    for key, value in {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    status, err = _main(
        capsys,
        "run",
        "digits",
        "--engine",
        "torch",
        "--devices",
        "2",
        "--out",
        str(tmp_path / "run"),
    )
    assert (status, err) == (
        2,
        "customfit: error: --devices: expected 4, the number of "
        "processes torchrun started; got 2\n",
    )


# ---------------------------------------------------------------- a run through the command line


def _cli_run(engine, out, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "customfit",
            "run",
            "digits",
            "--engine",
            engine,
            "--devices",
            str(DEVICES),
            "--quiet",
            "--out",
            str(out),
            *extra,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_a_run_on_two_devices_writes_as_one_does(tmp_path):
    """The command line on 2 devices of the torch engine: it starts 2 processes the torchrun way,
    of which rank 0 alone writes what a run writes. (Every engine's command line runs on 2
    devices in the slow test_two_devices_reach_the_digits_bar.)"""
    engine, out = "torch", tmp_path / "run"
    done = _cli_run(engine, out, "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        f"digits on {engine}: model default, 1 epochs, batch 64, lr 0.001, seed 0, 2 devices"
        in done.stdout
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["devices"] == DEVICES
    assert (out / "history.csv").read_text().count("\n") == 2  # a header and one epoch
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoint.safetensors", "curves.png", "history.csv", "metrics.json", "probabilities.png"]
    )


# ---------------------------------------------------------------- the bar


@pytest.mark.slow
@pytest.mark.parametrize("engine", registry.ENGINES)
def test_two_devices_reach_the_digits_bar(tmp_path, engine):
    """`customfit run digits --devices 2` (defaults: 30 epochs of global batch 64) reaches the
    digits bar on every engine."""
    out = tmp_path / "run"
    done = _cli_run(engine, out)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["devices"] == DEVICES and metrics["config"]["epochs"] == 30
    print(
        f"digits on {engine}, 2 devices: held-out accuracy {metrics['accuracy']:.4f}, "
        f"{metrics['seconds_per_epoch']:.2f} s/epoch"
    )  # shown with pytest -rP
    assert metrics["accuracy"] >= registry.spec("digits").bars(metrics["config"])["accuracy"]
    assert metrics["passed"] is True
