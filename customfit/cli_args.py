"""The command line's arguments: argparse's parser for every subcommand, with its errors as one
line in customfit's words. Imports no framework (`customfit --help` stays fast)."""

import argparse
import os
import re

from customfit import registry
from customfit.errors import UsageError

PROG = "customfit"
DEMO_TASK = "digits"
DEMO_ENGINE = "keras-jax"


def task_options():
    """name -> Option over every task (a name two tasks share must mean one flag)."""
    found = {}
    for task in registry.TASKS:
        for name, option in registry.hook(registry.spec(task), "OPTIONS").items():
            found.setdefault(name, option)
    return found


def error_line(message):
    return f"{PROG}: error: {' '.join(str(message).split())}"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line in customfit's words (no usage block)."""

    def error(self, message):
        message = " ".join(message.split())
        choice = re.match(
            r"argument (\S+): invalid choice: '?([^']*?)'? \(choose from (.*)\)$", message
        )
        if choice:
            name, got, options = choice.groups()
            options = ", ".join(o.strip(" '") for o in options.split(","))
            name = "command" if name.startswith("{") or name == "command" else name
            message = f"{name}: expected one of {options}; got {got!r}"
        elif message.startswith("argument "):
            message = message[len("argument ") :]
        message = message.replace("the following arguments are required:", "missing:")
        self.exit(2, error_line(message) + "\n")


def _checked(check, field):
    """An argparse type from a customfit.validate check: its message, in one line."""

    def parse(text):
        from customfit import validate

        try:
            return getattr(validate, check)(field, text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(e.message) from None

    parse.__name__ = field
    return parse


def build_parser():
    parser = Parser(
        prog=PROG,
        allow_abbrev=False,
        description="Write your own training objective; train it with TensorFlow, PyTorch or JAX, "
        "natively or through Keras 3's fit().",
        epilog="`customfit COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    commands.add_parser(
        "list", help="tasks, engines, and what each task judges", allow_abbrev=False
    )

    run = _command(
        commands,
        "run",
        "train one task on one engine; write metrics, history, figures, checkpoint",
        description="Train TASK on ENGINE, judge it on held-out data, and write metrics.json, "
        "history.csv, figures (PNG) and checkpoint.safetensors under --out.",
    )
    run.add_argument("task", metavar="TASK", nargs="?", help=f"one of: {', '.join(registry.TASKS)}")
    _run_options(run, engine_required=True)
    run.add_argument("--model", metavar="M", help="the task's model (see `customfit list`)")
    run.add_argument("--out", metavar="DIR", help="output folder (default: runs/TASK-ENGINE)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.safetensors (same task, engine, model)",
    )
    run.add_argument(
        "--data",
        metavar="FILE.npz",
        help="train on your own data: an .npz with x_train, y_train, x_test, y_test "
        "(mnist also reads a folder of MNIST's four IDX files)",
    )
    run.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also log each epoch's figures for TensorBoard under DIR (train/, "
        "validation/), with the engine's own writer",
    )
    run.add_argument(
        "--devices",
        metavar="N",
        type=_checked("positive_int", "devices"),
        help="train on N devices, each engine its framework's way (on a CPU: "
        "XLA host devices, TensorFlow logical CPUs, N gloo processes); "
        "across hosts (TF_CONFIG, KERAS_DISTRIBUTION_*, torchrun --nnodes) "
        "N counts every host's; --batch-size is the global batch",
    )
    run.add_argument(
        "--precision",
        metavar="P",
        help="float32 (default) or mixed: float32 weights, 16-bit compute "
        "(bfloat16 on a CPU, float16 with loss scaling on a GPU), each engine "
        "its framework's way",
    )
    run.add_argument(
        "--device",
        metavar="D",
        help="cpu or gpu (default: the GPU where the engine's framework sees one, else the CPU)",
    )
    tasks_of = {}
    for task in registry.TASKS:
        for name in registry.hook(registry.spec(task), "OPTIONS"):
            tasks_of.setdefault(name, []).append(task)
    group = run.add_argument_group(
        "task options (checked by the task; `customfit list` shows each task's)"
    )
    for name, option in task_options().items():
        # Strings here: the task checks them, so that its message is the one a user reads.
        group.add_argument(
            option.cli_flag,
            dest=name,
            metavar=name.upper(),
            help=f"{', '.join(tasks_of[name])}: {option.help}",
        )

    matrix = _command(
        commands,
        "matrix",
        "every task on every engine, each in its own process; a table and a report",
        description="Run every TASK on every ENGINE (each in its own process) with the task's "
        "defaults and write matrix.json and matrix.md under --out. Exit status 1 if a "
        "run failed or missed its bar.",
    )
    _tasks_and_engines(matrix, registry.TASKS, f"default: {' '.join(registry.TASKS)}")
    matrix.add_argument(
        "--out", metavar="DIR", default=os.path.join("runs", "matrix"), help="default: runs/matrix"
    )
    matrix.add_argument(
        "--epochs",
        metavar="N",
        type=_checked("positive_int", "epochs"),
        help="override every task's epoch count",
    )
    matrix.add_argument("--seed", metavar="S", type=_checked("seed", "seed"), help="default: 0")
    matrix.add_argument(
        "--report", action="store_true", help="also probe parity per task and write DIR/report.html"
    )

    bench = _command(
        commands,
        "bench",
        "training throughput per task x engine, eager against compiled",
        description="Time training steps per task x engine x batch size x mode (eager, compiled), "
        "each engine in its own process, beside stock Keras fit() on the same network "
        "and backend; write bench.json and bench.md under --out and print the table.",
    )
    from customfit.bench.runner import DEFAULT_BATCH_SIZES, DEFAULT_TASKS, TASKS as BENCH_TASKS

    _tasks_and_engines(
        bench, DEFAULT_TASKS, f"among {' '.join(BENCH_TASKS)} (default: {' '.join(DEFAULT_TASKS)})"
    )
    bench.add_argument(
        "--batch-sizes",
        nargs="+",
        metavar="B",
        default=list(DEFAULT_BATCH_SIZES),
        type=_checked("positive_int", "batch_sizes"),
        help=f"default: {' '.join(map(str, DEFAULT_BATCH_SIZES))}",
    )
    bench.add_argument(
        "--compiled",
        choices=("on", "off", "both"),
        default="both",
        help="compiled steps, eager steps, or both (default)",
    )
    bench.add_argument(
        "--precision",
        choices=("float32", "mixed", "both"),
        default="float32",
        help="float32 (default), mixed (customfit run's --precision mixed), or "
        "both, side by side with the mixed / float32 speed-up",
    )
    bench.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default=None,
        help="where every engine computes (default: the GPU where the engine's "
        "framework sees one, else the CPU)",
    )
    _number(bench, "--steps", "positive_int", 20, "training steps per timed pass (default: 20)")
    _number(
        bench, "--repeats", "at_least_five", 5, "timed passes per cell, at least 5 (default: 5)"
    )
    _number(
        bench,
        "--warmup",
        "positive_int",
        1,
        "untimed passes first, for tracing and compiling (default: 1)",
    )
    _number(
        bench,
        "--threads",
        "non_negative_int",
        1,
        "threads for every framework in each engine's process, which is held to as many CPUs "
        "(default: 1; 0: each framework's own default)",
    )
    bench.add_argument(
        "--data",
        metavar="FILE.npz",
        help="mnist's data (default: Keras's cached mnist.npz, else a stand-in)",
    )
    bench.add_argument(
        "--out", metavar="DIR", default=os.path.join("runs", "bench"), help="default: runs/bench"
    )

    demo = _command(
        commands,
        "demo",
        f"the {DEMO_TASK} classifier on {DEMO_ENGINE}, with its figures and metrics",
        description=f"Train the {DEMO_TASK} classifier (default model) and write its metrics and "
        "figures (default folder: runs/demo).",
    )
    _run_options(demo, engine_required=False)
    demo.add_argument(
        "--out", metavar="DIR", default=os.path.join("runs", "demo"), help="default: runs/demo"
    )

    report = _command(
        commands,
        "report",
        "one self-contained HTML page of a matrix or a folder of runs",
        description="Write DIR/report.html: the tasks x engines table against the bars, parity "
        "(where the matrix probed it), and every run's figures, timings and versions; "
        "images inlined, nothing fetched from the network.",
    )
    report.add_argument("dir", metavar="DIR", help="a matrix folder or a folder of run folders")
    _compare_parser(commands)
    return parser


def _compare_parser(commands):
    compare = _command(
        commands,
        "compare",
        "your cf.Model on several backends: the same numbers or not, and which trains it fastest",
        description="Build FACTORY's cf.Model once, give every Keras backend the same weights, "
        "batch and random draws, each in its own process; compare each update's objective "
        "(training on and off) and gradients with a float64 reference (Keras on JAX), time "
        "fit()'s train step. Exit status 0: they agree within --rtol; 1: they differ.",
    )
    compare.add_argument(
        "target", metavar="FILE.py:FACTORY", help="a function in FILE.py returning a cf.Model"
    )
    compare.add_argument(
        "--data",
        metavar="BATCH.npz",
        required=True,
        help="the arrays fit() would get: x, and y and sample_weight where the model takes them",
    )
    compare.add_argument(
        "--backends",
        nargs="+",
        metavar="B",
        default=["tensorflow", "torch", "jax"],
        help="default: tensorflow torch jax",
    )
    compare.add_argument(
        "--rtol",
        metavar="R",
        type=_checked("positive_float", "rtol"),
        default=1e-4,
        help="the largest relative difference that agrees (default: 1e-4)",
    )
    _number(compare, "--steps", "positive_int", 50, "timed train steps per backend (default: 50)")
    compare.add_argument(
        "--seed",
        metavar="S",
        type=_checked("seed", "seed"),
        default=0,
        help="the shared random draws' seed (default: 0)",
    )
    compare.add_argument("--json", metavar="OUT", help="also write everything as JSON to OUT")


def _command(commands, name, help, description):
    return commands.add_parser(name, help=help, description=description, allow_abbrev=False)


def _tasks_and_engines(parser, default_tasks, tasks_help):
    parser.add_argument(
        "--tasks", nargs="+", metavar="TASK", default=list(default_tasks), help=tasks_help
    )
    engines = list(registry.ENGINES)
    parser.add_argument(
        "--engines",
        nargs="+",
        metavar="ENGINE",
        default=engines,
        help=f"default: {' '.join(engines)}",
    )


def _number(parser, flag, check, default, help):
    """A count or a number, checked by customfit.validate's `check`."""
    field = flag.lstrip("-").replace("-", "_")
    parser.add_argument(flag, metavar="N", type=_checked(check, field), default=default, help=help)


def _run_options(parser, engine_required):
    engines = ", ".join(registry.ENGINES)
    parser.add_argument(
        "--engine",
        metavar="ENGINE",
        help=f"one of: {engines}" + ("" if engine_required else f" (default: {DEMO_ENGINE})"),
    )
    parser.add_argument("--epochs", metavar="N", type=_checked("positive_int", "epochs"))
    parser.add_argument("--batch-size", metavar="B", type=_checked("positive_int", "batch_size"))
    parser.add_argument(
        "--lr", metavar="LR", type=_checked("positive_float", "lr"), help="Adam's learning rate"
    )
    parser.add_argument("--seed", metavar="S", type=_checked("seed", "seed"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
