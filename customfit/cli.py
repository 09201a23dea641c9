"""The command line: `customfit list | run | matrix | bench | demo` (also `python -m customfit`).

`--help` and `list` import no framework. A user's mistake gets one line on stderr,
`customfit: error: <what>: expected ...; got ...`, exit status 2, no traceback, and nothing
written. Frameworks are imported only once a run has been checked.
"""

import argparse
import os
import re
import sys

from customfit import registry
from customfit.errors import CustomfitError, UsageError

PROG = "customfit"
DEMO_TASK = "digits"
DEMO_ENGINE = "keras-jax"

ENGINE_NOTES = {
    "tensorflow": "native TensorFlow: tf.keras layers, tf.GradientTape, tf.function, tf.data",
    "torch": "native PyTorch: torch.nn, autograd, optimizer.zero_grad/step, DataLoader",
    "flax": "native JAX: Flax NNX, optax, nnx.jit",
    "keras-tensorflow": "cf.Model + compile()/fit() on Keras's TensorFlow backend",
    "keras-torch": "cf.Model + compile()/fit() on Keras's PyTorch backend",
    "keras-jax": "cf.Model + compile()/fit() on Keras's JAX backend",
}

# UsageError.field -> how the command line spells it.
FLAGS = {
    "task": "TASK", "engine": "--engine", "epochs": "--epochs", "batch_size": "--batch-size",
    "lr": "--lr", "seed": "--seed", "model": "--model", "out": "--out", "resume": "--resume",
    "checkpoint": "--resume", "data": "--data", "tasks": "--tasks", "engines": "--engines",
    "tensorboard": "--tensorboard",
    "batch_sizes": "--batch-sizes", "steps": "--steps", "repeats": "--repeats", "warmup": "--warmup",
    "devices": "--devices", "precision": "--precision", "device": "--device",
    "dir": "DIR",
}


def _task_options():
    """name -> Option over every task (a name two tasks share must mean one flag)."""
    found = {}
    for task in registry.TASKS:
        for name, option in registry.hook(registry.spec(task), "OPTIONS").items():
            found.setdefault(name, option)
    return found


def _flag(field):
    if field in FLAGS:
        return FLAGS[field]
    option = _task_options().get(field)
    return option.cli_flag if option else field


def _error_line(message):
    return f"{PROG}: error: {' '.join(str(message).split())}"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line in customfit's words (no usage block)."""

    def error(self, message):
        message = " ".join(message.split())
        choice = re.match(r"argument (\S+): invalid choice: '?([^']*?)'? \(choose from (.*)\)$", message)
        if choice:
            name, got, options = choice.groups()
            options = ", ".join(o.strip(" '") for o in options.split(","))
            name = "command" if name.startswith("{") or name == "command" else name
            message = f"{name}: expected one of {options}; got {got!r}"
        elif message.startswith("argument "):
            message = message[len("argument "):]
        message = message.replace("the following arguments are required:", "missing:")
        self.exit(2, _error_line(message) + "\n")


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


def _usage_error(e):
    flag = _flag(e.field) if e.field else e.field
    return _error_line(f"{flag}: {e.message}" if flag else e.message)


# ----------------------------------------------------------------------------- parser


def build_parser():
    parser = Parser(
        prog=PROG, allow_abbrev=False,
        description="Write your own training objective; train it with TensorFlow, PyTorch or JAX, "
                    "natively or through Keras 3's fit().",
        epilog="`customfit COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    commands.add_parser("list", help="tasks, engines, and what each task judges", allow_abbrev=False)

    run = commands.add_parser(
        "run", help="train one task on one engine; write metrics, history, figures, checkpoint",
        allow_abbrev=False,
        description="Train TASK on ENGINE, judge it on held-out data, and write metrics.json, "
                    "history.csv, figures (PNG) and checkpoint.safetensors under --out.",
    )
    run.add_argument("task", metavar="TASK", nargs="?", help=f"one of: {', '.join(registry.TASKS)}")
    _run_options(run, engine_required=True)
    run.add_argument("--model", metavar="M", help="the task's model (see `customfit list`)")
    run.add_argument("--out", metavar="DIR", help="output folder (default: runs/TASK-ENGINE)")
    run.add_argument("--resume", action="store_true",
                     help="continue from DIR/checkpoint.safetensors (same task, engine, model)")
    run.add_argument("--data", metavar="FILE.npz",
                     help="train on your own data: an .npz with x_train, y_train, x_test, y_test "
                          "(mnist also reads a folder of MNIST's four IDX files)")
    run.add_argument("--tensorboard", metavar="DIR",
                     help="also log each epoch's figures for TensorBoard under DIR (train/, "
                          "validation/), with the engine's own writer")
    run.add_argument("--devices", metavar="N", type=_checked("positive_int", "devices"),
                     help="train on N devices, each engine its framework's way (on a CPU: "
                          "XLA host devices, TensorFlow logical CPUs, N gloo processes); "
                          "across hosts (TF_CONFIG, KERAS_DISTRIBUTION_*, torchrun --nnodes) "
                          "N counts every host's; --batch-size is the global batch")
    run.add_argument("--precision", metavar="P",
                     help="float32 (default) or mixed: float32 weights, 16-bit compute "
                          "(bfloat16 on a CPU, float16 with loss scaling on a GPU), each engine "
                          "its framework's way")
    run.add_argument("--device", metavar="D",
                     help="cpu or gpu (default: the GPU where the engine's framework sees one, "
                          "else the CPU)")
    tasks_of = {}
    for task in registry.TASKS:
        for name in registry.hook(registry.spec(task), "OPTIONS"):
            tasks_of.setdefault(name, []).append(task)
    group = run.add_argument_group("task options (checked by the task; `customfit list` shows each task's)")
    for name, option in _task_options().items():
        # Strings here: the task checks them, so that its message is the one a user reads.
        group.add_argument(option.cli_flag, dest=name, metavar=name.upper(),
                           help=f"{', '.join(tasks_of[name])}: {option.help}")

    matrix = commands.add_parser(
        "matrix", help="every task on every engine, each in its own process; a table and a report",
        allow_abbrev=False,
        description="Run every TASK on every ENGINE (each in its own process) with the task's "
                    "defaults and write matrix.json and matrix.md under --out. Exit status 1 if a "
                    "run failed or missed its bar.",
    )
    matrix.add_argument("--tasks", nargs="+", metavar="TASK", default=list(registry.TASKS),
                        help=f"default: {' '.join(registry.TASKS)}")
    matrix.add_argument("--engines", nargs="+", metavar="ENGINE", default=list(registry.ENGINES),
                        help=f"default: {' '.join(registry.ENGINES)}")
    matrix.add_argument("--out", metavar="DIR", default=os.path.join("runs", "matrix"),
                        help="default: runs/matrix")
    matrix.add_argument("--epochs", metavar="N", type=_checked("positive_int", "epochs"),
                        help="override every task's epoch count")
    matrix.add_argument("--seed", metavar="S", type=_checked("seed", "seed"), help="default: 0")
    matrix.add_argument("--report", action="store_true",
                        help="also probe parity per task and write DIR/report.html")

    bench = commands.add_parser(
        "bench", help="training throughput per task x engine, eager against compiled",
        allow_abbrev=False,
        description="Time training steps per task x engine x batch size x mode (eager, compiled), "
                    "each engine in its own process, beside stock Keras fit() on the same network "
                    "and backend; write bench.json and bench.md under --out and print the table.",
    )
    from customfit.bench.runner import DEFAULT_BATCH_SIZES, DEFAULT_TASKS, TASKS as BENCH_TASKS

    bench.add_argument("--tasks", nargs="+", metavar="TASK", default=list(DEFAULT_TASKS),
                       help=f"among {' '.join(BENCH_TASKS)} (default: {' '.join(DEFAULT_TASKS)})")
    bench.add_argument("--engines", nargs="+", metavar="ENGINE", default=list(registry.ENGINES),
                       help=f"default: {' '.join(registry.ENGINES)}")
    bench.add_argument("--batch-sizes", nargs="+", metavar="B", default=list(DEFAULT_BATCH_SIZES),
                       type=_checked("positive_int", "batch_sizes"),
                       help=f"default: {' '.join(map(str, DEFAULT_BATCH_SIZES))}")
    bench.add_argument("--compiled", choices=("on", "off", "both"), default="both",
                       help="compiled steps, eager steps, or both (default)")
    bench.add_argument("--precision", choices=("float32", "mixed", "both"), default="float32",
                       help="float32 (default), mixed (customfit run's --precision mixed), or "
                            "both, side by side with the mixed / float32 speed-up")
    bench.add_argument("--device", choices=("cpu", "gpu"), default=None,
                       help="where every engine computes (default: the GPU where the engine's "
                            "framework sees one, else the CPU)")
    bench.add_argument("--steps", metavar="N", type=_checked("positive_int", "steps"), default=20,
                       help="training steps per timed pass (default: 20)")
    bench.add_argument("--repeats", metavar="N", type=_checked("at_least_five", "repeats"),
                       default=5, help="timed passes per cell, at least 5 (default: 5)")
    bench.add_argument("--warmup", metavar="N", type=_checked("positive_int", "warmup"), default=1,
                       help="untimed passes first, for tracing and compiling (default: 1)")
    bench.add_argument("--data", metavar="FILE.npz",
                       help="mnist's data (default: Keras's cached mnist.npz, else a stand-in)")
    bench.add_argument("--out", metavar="DIR", default=os.path.join("runs", "bench"),
                       help="default: runs/bench")

    demo = commands.add_parser(
        "demo", help=f"the {DEMO_TASK} classifier on {DEMO_ENGINE}, with its figures and metrics",
        allow_abbrev=False,
        description=f"Train the {DEMO_TASK} classifier (default model) and write its metrics and "
                    "figures (default folder: runs/demo).",
    )
    _run_options(demo, engine_required=False)
    demo.add_argument("--out", metavar="DIR", default=os.path.join("runs", "demo"),
                      help="default: runs/demo")

    report = commands.add_parser(
        "report", help="one self-contained HTML page of a matrix or a folder of runs",
        allow_abbrev=False,
        description="Write DIR/report.html: the tasks x engines table against the bars, parity "
                    "(where the matrix probed it), and every run's figures, timings and versions; "
                    "images inlined, nothing fetched from the network.",
    )
    report.add_argument("dir", metavar="DIR", help="a matrix folder or a folder of run folders")
    return parser


def _run_options(parser, engine_required):
    engines = ", ".join(registry.ENGINES)
    parser.add_argument(
        "--engine", metavar="ENGINE",
        help=f"one of: {engines}" + ("" if engine_required else f" (default: {DEMO_ENGINE})"))
    parser.add_argument("--epochs", metavar="N", type=_checked("positive_int", "epochs"))
    parser.add_argument("--batch-size", metavar="B", type=_checked("positive_int", "batch_size"))
    parser.add_argument("--lr", metavar="LR", type=_checked("positive_float", "lr"),
                        help="Adam's learning rate")
    parser.add_argument("--seed", metavar="S", type=_checked("seed", "seed"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# ----------------------------------------------------------------------------- commands


def cmd_list(args):
    out = [f"tasks ({len(registry.TASKS)}):"]
    for task in registry.TASKS:
        spec = registry.spec(task)
        out.append(f"  {task:<12} {spec.SUMMARY}")
        out.append(f"  {'':<12} judge: {spec.JUDGE}")
        for model in spec.MODELS:
            settings = registry.defaults(spec, model)
            mark = " (default)" if model == spec.DEFAULTS["model"] else ""
            line = (f"  {'':<12} --model {model}{mark}: {settings['epochs']} epochs, batch "
                    f"{settings['batch_size']}, lr {settings['lr']}")
            by_method = registry.hook(spec, "BARS_BY_METHOD")
            if by_method is None:
                line += f"; bar: {_bars_text(spec.bars({**settings, 'model': model}))}"
            out.append(line)
        for option in registry.hook(spec, "OPTIONS").values():
            out.append(f"  {'':<12} {option.describe()}")
        for method, bars in (registry.hook(spec, "BARS_BY_METHOD") or {}).items():
            out.append(f"  {'':<12} bar (--method {method}): {_bars_text(bars)}")
    out.append("")
    out.append(f"engines ({len(registry.ENGINES)}):")
    for engine in registry.ENGINES:
        line = f"  {engine:<17} {ENGINE_NOTES.get(engine, '')}"
        missing = registry.missing_modules(engine)
        if missing:
            line += (f" [unavailable: {' and '.join(missing)} not installed; "
                     f"pip install 'customfit[{registry.EXTRA[engine]}]']")
        out.append(line)
    print("\n".join(out))
    return 0


def _bars_text(bars):
    from customfit.runs.results import describe_bar

    return ", ".join(f"{k} {describe_bar(v)}" for k, v in bars.items())


def _report(result):
    from customfit.runs.results import describe_bar

    cfg = result.config
    judged = ", ".join(
        f"{k} {result.metrics[k]:.4f} (bar {describe_bar(v)})" for k, v in result.bars.items())
    lines = [
        f"{result.task} on {result.engine}: model {cfg['model']}, {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, lr {cfg['lr']:g}, seed {cfg['seed']}"
        + (f", {cfg['devices']} devices" if cfg.get("devices", 1) > 1 else "")
        + (f", precision {result.precision}" if result.precision != "float32" else "")
        + (f", on the {result.device.upper()}" if result.device != "cpu" else "")
        + (f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""),
        f"{judged}: {'passed' if result.passed else 'NOT passed'}",
        *(f"  beside it, {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
          for name, figures in result.references.items()),
        f"{result.seconds_per_epoch:.2f} s per epoch, {result.total_seconds:.1f} s in all",
        f"wrote {os.path.join(result.out_dir, '')}: "
        + ", ".join(os.path.basename(p) for p in result.paths.values()),
    ]
    print("\n".join(lines), flush=True)


def cmd_run(args):
    config = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "model": args.model, "out": args.out, "resume": args.resume, "data": args.data,
        "verbose": not args.quiet, "tensorboard": args.tensorboard, "devices": args.devices,
        "precision": args.precision, "device": args.device,
        **{name: getattr(args, name) for name in _task_options()},
    }
    return _run(args.task, args.engine, config)


def _run(task, engine, config):
    # Checked once, by the run's plan (customfit/runs/plan.py), before any framework loads.
    from customfit.runs import run

    result = run(task, engine, **{k: v for k, v in config.items() if v is not None})
    if result is not None:  # None: one of several processes (torchrun's, a cluster's), not 0
        _report(result)
    return 0


def cmd_demo(args):
    config = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "out": args.out, "verbose": not args.quiet,
    }
    return _run(DEMO_TASK, args.engine or DEMO_ENGINE, config)


def cmd_matrix(args):
    from customfit import matrix

    return matrix.run(args)


def cmd_report(args):
    from customfit import report

    path = report.write(args.dir)
    print(f"wrote {path}")
    return 0


def cmd_bench(args):
    from customfit.bench.runner import run

    return run(args)


COMMANDS = {"list": cmd_list, "run": cmd_run, "matrix": cmd_matrix, "bench": cmd_bench,
            "demo": cmd_demo, "report": cmd_report}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(_usage_error(e), file=sys.stderr)
        return 2
    except CustomfitError as e:
        # RunStopped and others: one line; the exit status says which (3: a non-finite loss,
        # 130: Ctrl-C, 1: anything else).
        print(f"{PROG}: {e.label}: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
