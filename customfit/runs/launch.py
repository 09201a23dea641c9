"""Where a run trains, and this process made ready for it. where() decides: here; in a
subprocess (Keras is already imported here with another backend); in N processes started the
torchrun way (torch engines on several devices); or as one of several hosts. folder() holds
the run's folder (a scratch one on another host), prepare() readies this process for the
engine's framework and returns the compute device. A subprocess runs
`python -m customfit.runs REQUEST.json` and its Result is read back; the torch processes each
run the same run(). Training itself is the next step (training.py), which launch does not know.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace

from customfit import compute_device, cpu_memory, hosts, registry, run_folder
from customfit import devices as spreading
from customfit.errors import (
    CheckpointError,
    CustomfitError,
    Interrupted,
    NonFiniteLoss,
    UsageError,
    WriteError,
)
from customfit.runs.results import Result

# Where a run trains (where() answers one of these).
SUBPROCESS = "a subprocess"  # Keras is imported here with another backend
TORCH_PROCESSES = "torch processes"  # started here the torchrun way, one per device
ANOTHER_HOST = "another host"  # not process 0 of a run across hosts: writes into scratch
HERE = "here"
# One of several torch processes whose folder another process holds: customfit's launching
# process, or torchrun's global rank 0.
HERE_FOLDER_HELD_ELSEWHERE = "here, the folder held by another process"


def keras_backend_in_process():
    """The backend of the Keras already imported here, or None if Keras is not imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return keras.backend.backend()
    except Exception:
        return os.environ.get("KERAS_BACKEND", "tensorflow")


def needs_subprocess(engine):
    """True when Keras is already imported in this process with a backend other than the one
    this engine needs (a Keras backend cannot change inside a process)."""
    current = keras_backend_in_process()
    return current is not None and current != registry.KERAS_BACKEND[engine]


def where(plan):
    """Where this run trains: SUBPROCESS, TORCH_PROCESSES, ANOTHER_HOST, HERE or
    HERE_FOLDER_HELD_ELSEWHERE."""
    engine, devices = plan.engine, plan.settings.get("devices", 1)
    if needs_subprocess(engine) or spreading.needs_fresh_process(engine, devices):
        return SUBPROCESS
    if devices > 1 and spreading.launched_world() is not None:
        # One of several torch processes: customfit's own launching process holds the folder
        # for them all; under torchrun (one host or several), global rank 0 holds it.
        if os.environ.get(spreading.LAUNCHED_HERE) or os.environ.get("RANK") != "0":
            return HERE_FOLDER_HELD_ELSEWHERE
        return HERE
    cluster = hosts.of(engine)
    if cluster is not None and cluster.index > 0:
        return ANOTHER_HOST
    if devices > 1 and engine in spreading.TORCH_ENGINES:
        return TORCH_PROCESSES
    return HERE


@contextlib.contextmanager
def folder(plan, where):
    """The run's folder, held for this run while it trains (made, or refused: --out /proc/x, a
    folder another run holds, before any framework loads); yields the plan to train.

    On another host, the process trains, judges and writes as process 0 does, since every
    collective needs every process, but into a scratch folder that goes when the run ends (as
    TensorFlow's guide to checkpoints under MultiWorkerMirroredStrategy has the other workers
    do): the plan yielded names it."""
    if where == ANOTHER_HOST:
        with tempfile.TemporaryDirectory(prefix="customfit-host-") as scratch:
            yield replace(plan, out=scratch, verbose=False, tensorboard=None)
    elif where == HERE_FOLDER_HELD_ELSEWHERE:
        yield plan
    else:
        what = f"customfit run {plan.task} --engine {plan.engine}"
        with run_folder.hold(plan.out, what=what):
            yield plan


def prepare(plan):
    """This process, made ready for the engine's framework before it loads (its Keras backend,
    its devices, --device, the hosts' coordinator); returns the compute device, "cpu" or
    "gpu"."""
    engine, devices = plan.engine, plan.settings.get("devices", 1)
    os.environ["KERAS_BACKEND"] = registry.KERAS_BACKEND[engine]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines drown the bar
    spreading.prepare(engine, devices)
    # Before the framework starts: --device cpu hides the GPUs from it.
    compute_device.hide_if_asked(engine, plan.device_wanted)
    cluster = hosts.of(engine)
    if cluster is not None and engine in spreading.JAX_ENGINES:
        from customfit.parallel import coordinator

        # Before anything asks JAX for its devices (choosing the device below does): JAX's
        # coordinator must be joined before its backends start.
        coordinator.join(engine, cluster)
    device = compute_device.use(plan.task, engine, plan.device_wanted, devices)
    cpu_memory.keep_freed()  # the torch engines' steps stop page-faulting their tensors in
    return device


def torch_processes(entrypoint, task, engine, config, devices):
    """The run in `devices` processes started the torchrun way, each calling
    entrypoint(task, engine, config); rank 0's Result."""
    from customfit.parallel import process_group

    try:
        results = process_group.launch(entrypoint, (task, engine, config), devices)
    except Exception as e:  # a worker failed: its traceback is above, on stderr
        raise CustomfitError(
            f"a {engine} process of {devices} failed ({' '.join(str(e).split())[:200]})"
        ) from None
    return Result(**results[0])


def in_subprocess(task, engine, config, plan):
    config = dict(config)
    with tempfile.TemporaryDirectory(prefix="customfit-") as tmp:
        data = plan.data_given
        if data is not None and not isinstance(data, (str, os.PathLike)):
            import numpy as np

            data_path = os.path.join(tmp, "data.npz")
            split = plan.split
            np.savez(
                data_path,
                x_train=split.x_train,
                y_train=split.y_train,
                x_test=split.x_test,
                y_test=split.y_test,
            )
            config["data"] = data_path
            config["_data_label"] = "arrays"
        elif data is not None:
            config["data"] = os.fspath(data)
        config["out"] = plan.out  # the child runs in this process's working folder
        request = os.path.join(tmp, "request.json")
        answer = os.path.join(tmp, "result.json")
        with open(request, "w") as f:
            json.dump({"task": task, "engine": engine, "config": config, "result": answer}, f)
        env = dict(os.environ, KERAS_BACKEND=registry.KERAS_BACKEND[engine])
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Ctrl-C reaches the child too (one process group): the child stops at the end of its
        # step and writes its checkpoint, while this process waits for its answer.
        import signal

        previous = _ignore_sigint(signal)
        try:
            proc = subprocess.run([sys.executable, "-m", "customfit.runs", request], env=env)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if not os.path.exists(answer):
            raise CustomfitError(
                f"the {engine} subprocess ended with status {proc.returncode} and no result"
            )
        with open(answer) as f:
            reply = json.load(f)
    if "error" in reply:
        kind = reply["kind"]
        if kind in ("UsageError", "CheckpointError"):
            cls = {"UsageError": UsageError, "CheckpointError": CheckpointError}[kind]
            raise cls(reply["error"], field=reply.get("field"))
        cls = {
            "NonFiniteLoss": NonFiniteLoss,
            "Interrupted": Interrupted,
            "WriteError": WriteError,
        }.get(kind, CustomfitError)
        raise cls(reply["error"])
    return None if reply["result"] is None else Result(**reply["result"])


def _ignore_sigint(signal):
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def answer_request(request_path, run):
    """The subprocess's side: run(...) the request in this (fresh) process, write the Result as
    JSON; returns the exit status."""
    with open(request_path) as f:
        request = json.load(f)
    answer = request["result"]
    try:
        result = run(request["task"], request["engine"], **request["config"])
        # None: a process other than process 0 of a run across hosts, which writes nothing.
        reply = {"result": None if result is None else asdict(result)}
        status = 0
    except UsageError as e:
        reply = {"error": e.message, "field": e.field, "kind": type(e).__name__}
        status = 2
    except CustomfitError as e:
        reply = {"error": str(e), "kind": type(e).__name__}
        status = e.exit_status
    with open(answer, "w") as f:
        json.dump(reply, f)
    return status
