"""The command line: `customfit list | run | matrix | bench | demo | report | compare` (also
`python -m customfit`).

`--help` and `list` import no framework. A user's mistake gets one line on stderr,
`customfit: error: <what>: expected ...; got ...`, exit status 2, no traceback, and nothing
written. Frameworks are imported only once a run has been checked.
"""

import os
import sys

from customfit import registry
from customfit.cli_args import DEMO_ENGINE, DEMO_TASK, PROG, build_parser, error_line, task_options
from customfit.errors import CustomfitError, UsageError


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
    "task": "TASK",
    "engine": "--engine",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
    "model": "--model",
    "out": "--out",
    "resume": "--resume",
    "checkpoint": "--resume",
    "data": "--data",
    "tasks": "--tasks",
    "engines": "--engines",
    "tensorboard": "--tensorboard",
    "batch_sizes": "--batch-sizes",
    "steps": "--steps",
    "repeats": "--repeats",
    "warmup": "--warmup",
    "devices": "--devices",
    "precision": "--precision",
    "device": "--device",
    "dir": "DIR",
    "target": "FILE.py:FACTORY",
    "backends": "--backends",
    "rtol": "--rtol",
    "json": "--json",
}


def _flag(field):
    if field in FLAGS:
        return FLAGS[field]
    option = task_options().get(field)
    return option.cli_flag if option else field


def _usage_error(e):
    flag = _flag(e.field) if e.field else e.field
    return error_line(f"{flag}: {e.message}" if flag else e.message)


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
            line = (
                f"  {'':<12} --model {model}{mark}: {settings['epochs']} epochs, batch "
                f"{settings['batch_size']}, lr {settings['lr']}"
            )
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
            line += (
                f" [unavailable: {' and '.join(missing)} not installed; "
                f"pip install 'customfit[{registry.EXTRA[engine]}]']"
            )
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
        f"{k} {result.metrics[k]:.4f} (bar {describe_bar(v)})" for k, v in result.bars.items()
    )
    lines = [
        f"{result.task} on {result.engine}: model {cfg['model']}, {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, lr {cfg['lr']:g}, seed {cfg['seed']}"
        + (f", {cfg['devices']} devices" if cfg.get("devices", 1) > 1 else "")
        + (f", precision {result.precision}" if result.precision != "float32" else "")
        + (f", on the {result.device.upper()}" if result.device != "cpu" else "")
        + (
            f", resumed after epoch {result.resumed_from_epoch}"
            if result.resumed_from_epoch
            else ""
        ),
        f"{judged}: {'passed' if result.passed else 'NOT passed'}",
        *(
            f"  beside it, {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
            for name, figures in result.references.items()
        ),
        f"{result.seconds_per_epoch:.2f} s per epoch, {result.total_seconds:.1f} s in all",
        f"wrote {os.path.join(result.out_dir, '')}: "
        + ", ".join(os.path.basename(p) for p in result.paths.values()),
    ]
    print("\n".join(lines), flush=True)


def cmd_run(args):
    config = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "model": args.model,
        "out": args.out,
        "resume": args.resume,
        "data": args.data,
        "verbose": not args.quiet,
        "tensorboard": args.tensorboard,
        "devices": args.devices,
        "precision": args.precision,
        "device": args.device,
        **{name: getattr(args, name) for name in task_options()},
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
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "out": args.out,
        "verbose": not args.quiet,
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


def cmd_compare(args):
    from customfit.comparison import compare

    result = compare(
        args.target, args.data, args.backends, args.rtol, args.steps, args.json, args.seed
    )
    print(result.table())
    print(f"random draws: {result.noise}")
    print(result.verdict())
    if args.json:
        print(f"wrote {args.json}")
    return result.exit_status


COMMANDS = {
    "list": cmd_list,
    "run": cmd_run,
    "matrix": cmd_matrix,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "report": cmd_report,
    "compare": cmd_compare,
}


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
