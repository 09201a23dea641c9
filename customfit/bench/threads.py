"""Hold every framework to the number of threads a benchmark says it runs on, and measure how many
cores a process kept busy.

OMP_NUM_THREADS binds PyTorch only. TensorFlow sizes its intra-op and inter-op pools from
TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS (or tf.config.threading, before its runtime
starts). XLA on the CPU (the jax engines) has no thread count: measured with jax 0.10.2, neither
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false nor that with --xla_cpu_use_thunk_runtime=false
changed anything (two busy tf_XLAEigen threads on two cores, a stock Keras fit() of the MNIST CNN
keeping 1.9 threads runnable), and `intra_op_parallelism_threads` is a field of XLA's compile
options, not a flag. XLA sizes its pools from the CPUs the process may run on, as its maintainers
advise (jax-ml/jax#1539): so `bind` also restricts the process to `threads` CPUs
(os.sched_setaffinity), before any framework starts, for every engine alike. The threads every
framework starts later (its pools, Python's, the data pipeline's) inherit that set, so the process
cannot keep more than `threads` cores busy, whatever it runs.

Cores kept busy are measured two ways over an interval:
- CPU time over wall time (user + system of every thread of the process): what the process got;
  on a machine that other jobs share it is under what it asked for.
- runnable time over wall time: each thread's time on a CPU plus its time waiting for one in the
  run queue (Linux's /proc/self/task/*/schedstat), summed over threads: how many threads were
  ready to run, on average. On an idle machine with enough cores it is the cores used; bound to
  one CPU, above 1 it counts threads queuing for that CPU.
"""

import os
import time

_COUNTS = (
    "OMP_NUM_THREADS",  # PyTorch's intra-op pool (and OpenMP in any library)
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",  # NumPy's BLAS
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def environment(threads, base=None):
    """The environment a process started from `base` (default os.environ) needs for its
    frameworks to size their pools to `threads` threads; threads=None leaves it as it is."""
    env = dict(os.environ if base is None else base)
    if threads is not None:
        for name in _COUNTS:
            env[name] = str(threads)
    return env


def bind(threads, backend=None):
    """In the process that will train, before any framework has started: restrict it to `threads`
    CPUs (the first of those it may use), and, for the framework of `backend` (default
    $KERAS_BACKEND), set the pools' sizes through its own calls too (torch.set_num_threads and
    set_num_interop_threads; tf.config.threading). threads=None changes nothing. Returns the CPUs
    the process may use, or None where the system cannot say (not Linux)."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if threads is None:
        return allowed
    for name, value in environment(threads, {}).items():
        os.environ[name] = value
    if allowed is not None and threads < len(allowed):
        allowed = allowed[:threads]
        os.sched_setaffinity(0, allowed)
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set, or parallel work has started: keep what is there
            pass
    elif backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # its context has started; the environment's counts hold
            pass
    return allowed


def in_effect():
    """What the loaded frameworks say they use (only those already imported)."""
    import sys

    found = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "XLA_FLAGS") if k in os.environ}
    if hasattr(os, "sched_getaffinity"):
        found["cpus"] = sorted(os.sched_getaffinity(0))
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        found["torch"] = {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
        }
    if "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "config"):
        threading = sys.modules["tensorflow"].config.threading
        found["tensorflow"] = {
            "intra_op": threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS", 0)),
            "inter_op": threading.get_inter_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTEROP_THREADS", 0)),
        }
    return found


def _runnable_seconds():
    """Time on a CPU plus time waiting in the run queue, summed over this process's threads; None
    where /proc/self/task/*/schedstat is missing (not Linux)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                on_cpu, waiting = f.read().split()[:2]
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
        total += int(on_cpu) + int(waiting)
    return total / 1e9


class Clock:
    """Wall, CPU and runnable seconds of this process since it was made (or last `restart`). The
    wall clock is read last on starting and first on reading, so that reading the others falls
    outside the interval."""

    def __init__(self):
        self.restart()

    def restart(self):
        runnable, cpu = _runnable_seconds(), _cpu_seconds()
        self._start = time.perf_counter(), cpu, runnable

    def read(self):
        """{"wall", "cpu", "runnable"} seconds since the start (runnable None off Linux)."""
        wall = time.perf_counter()
        cpu, runnable = _cpu_seconds(), _runnable_seconds()
        w0, c0, r0 = self._start
        return {
            "wall": wall - w0,
            "cpu": cpu - c0,
            "runnable": None if runnable is None or r0 is None else runnable - r0,
        }


def _cpu_seconds():
    """User + system time of every thread of the process (CLOCK_PROCESS_CPUTIME_ID: to the
    nanosecond, where os.times() counts in 10 ms ticks)."""
    return time.process_time()


def cores(seconds):
    """{"cpu_per_wall", "runnable_per_wall"} from summed {"wall", "cpu", "runnable"} seconds."""
    wall = seconds["wall"]
    if wall <= 0:
        return {"cpu_per_wall": None, "runnable_per_wall": None}
    runnable = seconds.get("runnable")
    return {
        "cpu_per_wall": seconds["cpu"] / wall,
        "runnable_per_wall": None if runnable is None else runnable / wall,
    }


def add(readings):
    """The sum of several Clock readings (for the passes of one side of a cell)."""
    total = {"wall": 0.0, "cpu": 0.0, "runnable": 0.0}
    for r in readings:
        total["wall"] += r["wall"]
        total["cpu"] += r["cpu"]
        if total["runnable"] is not None:
            total["runnable"] = None if r["runnable"] is None else total["runnable"] + r["runnable"]
    return total
