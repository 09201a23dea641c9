"""`customfit run ... --tensorboard DIR` writes TensorBoard event logs on every engine, each with
its framework's own writer; read back, they hold the history's figures epoch by epoch, and a
resumed run goes on in the same logs."""

import os

import pytest
import warm
from event_logs import read_scalars
from history_helpers import read_history_csv
from test_cli import assert_usage_error

from customfit import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Both engines of one Keras backend in one process, through the command line's own main(): two
# epochs, or (resume) a first epoch, then --resume to a second.
SCRIPT = """
import sys
from customfit.cli import main
out, legs = sys.argv[1], {"straight": [["--epochs", "2"]],
                          "resume": [["--epochs", "1"], ["--epochs", "2", "--resume"]]}[sys.argv[2]]
for engine in sys.argv[3:]:
    for extra in legs:
        status = main(["run", "toy", "--engine", engine, "--out", f"{out}/{engine}",
                       "--tensorboard", f"{out}/{engine}-logs", "--quiet", *extra])
        assert status == 0, (engine, extra, status)
"""


@pytest.mark.parametrize(
    "legs, engines",
    [
        ("straight", ("tensorflow", "keras-tensorflow")),
        ("resume", ("torch", "keras-torch")),
        ("straight", ("flax", "keras-jax")),
    ],
    ids=["tensorflow", "torch", "jax"],
)
def test_tensorboard_logs_hold_the_history_on_every_engine(legs, engines, tmp_path):
    # One thread each: these runs are tiny, and threads that wait for each other on a busy
    # machine cost CPU for nothing.
    env = dict(
        os.environ,
        KERAS_BACKEND=registry.KERAS_BACKEND[engines[0]],
        TF_CPP_MIN_LOG_LEVEL="3",
        OMP_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
    )
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = warm.run(
        ["-c", SCRIPT, str(tmp_path), legs, *engines],
        backend=env["KERAS_BACKEND"],
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for engine in engines:
        history = read_history_csv(tmp_path / engine / "history.csv")
        assert [row["epoch"] for row in history] == [1, 2]
        logs = tmp_path / f"{engine}-logs"
        assert sorted(os.listdir(logs)) == ["train", "validation"]
        train, validation = (
            read_scalars(str(logs / "train")),
            read_scalars(str(logs / "validation")),
        )
        expected_train = {"epoch_loss", "epoch_accuracy", "epoch_seconds"}
        if engine.startswith("keras-"):
            expected_train.add("epoch_learning_rate")  # keras.callbacks.TensorBoard adds it
            assert train["epoch_learning_rate"] == [
                (1, pytest.approx(0.003)),
                (2, pytest.approx(0.003)),
            ]
        assert set(train) == expected_train, engine
        assert set(validation) == {"epoch_loss", "epoch_accuracy"}, engine
        for name in ("loss", "accuracy", "seconds"):
            assert train[f"epoch_{name}"] == [
                (row["epoch"], pytest.approx(row[name], rel=1e-6)) for row in history
            ], (engine, name)
        for name in ("loss", "accuracy"):
            assert validation[f"epoch_{name}"] == [
                (row["epoch"], pytest.approx(row[f"val_{name}"], rel=1e-6)) for row in history
            ], (engine, name)


def test_tensorboard_folder_that_is_a_file_is_one_line_and_exit_status_2(tmp_path):
    (tmp_path / "taken").write_text("")
    assert_usage_error(
        ["run", "toy", "--engine", "torch", "--tensorboard", "taken", "--out", "out"],
        str(tmp_path),
        "--tensorboard: expected a folder (or a path where one can be made); got 'taken', which is a file",
    )
    assert (tmp_path / "taken").read_text() == ""
