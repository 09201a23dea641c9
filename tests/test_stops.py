"""The pieces behind a run's early stops, in this process around test_resume's NumPy Trainer:
Ctrl-C's two presses, the divergence rule, a NaN stop resumed at a lower learning rate, the lock
and the tidying of an output folder, the folder that cannot be made."""

import os
import signal

import numpy as np
import pytest

from customfit import checkpoint, faults, registry, run_folder
from customfit import runs
from customfit.engines import loop
from customfit.runs import launch
from customfit.errors import Interrupted, NonFiniteLoss, UsageError
from test_resume import NumpyTrainer


@pytest.fixture
def numpy_engine(monkeypatch):
    monkeypatch.setattr(registry, "trainer_class", lambda task, engine: NumpyTrainer)
    monkeypatch.setattr(launch, "needs_subprocess", lambda engine: False)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    monkeypatch.setattr(NumpyTrainer, "crash_in_epoch", None)
    monkeypatch.delenv(faults.VARIABLE, raising=False)


def test_ctrl_c_once_asks_to_stop_and_twice_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with loop.CtrlC() as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)
        assert ctrl_c.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_divergence_is_a_thousandfold_rise_of_a_loss():
    first = {"loss": 1.6, "accuracy": 0.2, "gen_loss": -3.0}
    assert loop.diverged({"loss": 1601.5, "accuracy": 5000.0, "gen_loss": 2990.0}, first) == {}
    assert loop.diverged({"loss": 1601.7, "gen_loss": 3001.0}, first) == {
        "loss": 1601.7,
        "gen_loss": 3001.0,
    }
    assert loop.diverged({"loss": -1e9}, first) == {}  # a loss that falls is not diverging


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_an_infinite_loss_stops_and_resumes_at_a_lower_rate_as_a_fresh_run_at_that_rate(
    numpy_engine, tmp_path
):
    out = str(tmp_path / "run")
    with pytest.raises(NonFiniteLoss) as info:
        runs.run("toy", "torch", epochs=2, lr=1e30, out=out, verbose=False)
    message = str(info.value)
    assert info.value.exit_status == 3
    assert message.startswith("loss = inf at epoch 1, step 2 of 300 (lr 1e+30): training stopped; ")
    assert message.endswith(
        f"keeps the initial weights (epoch 0); go on with a lower learning rate: "
        f"customfit run toy --engine torch --out {out} --resume --lr 0.003"
    )
    _, meta = checkpoint.load(os.path.join(out, "checkpoint.safetensors"))
    assert meta["epoch"] == 0 and meta["stopped"] == {"why": "nonfinite", "epoch": 1, "step": 2}

    resumed = runs.run("toy", "torch", lr=0.003, out=out, resume=True, verbose=False)
    fresh = runs.run("toy", "torch", epochs=2, lr=0.003, out=str(tmp_path / "fresh"), verbose=False)
    a, _ = checkpoint.load(resumed.paths["checkpoint"])
    b, _ = checkpoint.load(fresh.paths["checkpoint"])
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert resumed.config["lr"] == 0.003
    import json

    assert json.load(open(resumed.paths["metrics"]))["lr_changes"] == [{"epoch": 1, "lr": 0.003}]
    # A run that did not stop on a NaN keeps its rate on resume.
    with pytest.raises(UsageError, match="expected 0.003 as in the checkpoint being resumed"):
        runs.run("toy", "torch", epochs=3, lr=0.001, out=out, resume=True, verbose=False)


def test_ctrl_c_stops_after_its_step_and_the_run_goes_on(numpy_engine, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    monkeypatch.setenv(faults.VARIABLE, "interrupt@step:2.7")
    with pytest.raises(Interrupted) as info:
        runs.run("toy", "torch", epochs=3, out=out, verbose=False)
    assert info.value.exit_status == 130
    assert str(info.value) == (
        f"Ctrl-C after step 7 of 300 in epoch 2; {out}/checkpoint.safetensors "
        f"keeps epoch 1; go on with: customfit run toy --engine torch --out "
        f"{out} --resume"
    )
    monkeypatch.delenv(faults.VARIABLE)
    resumed = runs.run("toy", "torch", out=out, resume=True, verbose=False)
    fresh = runs.run("toy", "torch", epochs=3, out=str(tmp_path / "fresh"), verbose=False)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in fresh.history]


def test_one_run_per_folder_and_a_tidy_folder(tmp_path):
    folder = tmp_path / "run"
    (folder / "epochs").mkdir(parents=True)
    (folder / "inner").mkdir()
    (folder / "inner" / "checkpoint.safetensors").write_bytes(b"another run's")
    for path in (
        folder / ".checkpoint.safetensors.x1.tmp",
        folder / "epochs" / ".epoch_0001.npy.x2.tmp",
        folder / "inner" / ".metrics.json.x3.tmp",
    ):
        path.write_bytes(b"half")
    with run_folder.hold(folder, what="the first run"):
        assert sorted(os.listdir(folder)) == [".customfit.lock", "epochs", "inner"]
        assert os.listdir(folder / "epochs") == []
        assert (folder / "inner" / ".metrics.json.x3.tmp").exists()  # not this run's to tidy
        with pytest.raises(UsageError) as info:
            run_folder.Lock(folder).acquire()
        assert str(info.value).startswith(
            f"out: expected an output folder that no other run is using; "
            f"got '{folder}', which process {os.getpid()} (the first run, since "
        )
    assert not (folder / ".customfit.lock").exists()
    run_folder.Lock(folder).acquire().release()


def test_a_folder_that_cannot_be_made_leaves_nothing(tmp_path):
    with pytest.raises(
        UsageError, match=r"expected a folder that can be made and written; got '/proc/x' "
    ):
        run_folder.make("/proc/x")
    too_long = tmp_path / "a" / "b" / ("y" * 300)
    with pytest.raises(UsageError, match="File name too long"):
        run_folder.make(too_long)
    assert os.listdir(tmp_path) == []
    with run_folder.hold(tmp_path / "c" / "d"):
        pass
    assert os.listdir(tmp_path) == []  # made, left empty: removed


def test_fault_plans_are_read_strictly(monkeypatch):
    monkeypatch.setenv(faults.VARIABLE, "explode@step:1.1")
    with pytest.raises(ValueError, match="cannot read 'explode@step:1.1'"):
        faults.after_step(1, 1, {"loss": 1.0})
    monkeypatch.setenv(faults.VARIABLE, "nan@step:1.2")
    assert faults.after_step(1, 1, {"loss": 1.0}) == {"loss": 1.0}
    assert np.isnan(faults.after_step(1, 2, {"loss": 1.0})["loss"])
    assert faults.after_step(1, 2, {"loss": 1.0}) == {"loss": 1.0}  # once
