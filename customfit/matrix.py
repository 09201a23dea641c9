"""`customfit matrix`: every task on every engine, each in its own process (`customfit run`),
then a table (matrix.json, matrix.md) and, with --report, parity per task and report.html."""

import json
import os
import subprocess
import sys
import time

from customfit import registry
from customfit.errors import UsageError


def run(args):
    from customfit import validate

    for task in args.tasks:
        validate.one_of("tasks", task, registry.TASKS)
    for engine in args.engines:
        validate.one_of("engines", engine, registry.ENGINES)
    from customfit import run_folder

    out = args.out
    if not out:
        raise UsageError.expected("out", "a folder's path", out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError.expected(
            "out", "a folder (or a path where one can be made)", given=f"{out!r}, which is a file"
        )
    with run_folder.hold(out, what="customfit matrix"):
        return run_all(args, out)


def run_all(args, out):
    tasks = list(dict.fromkeys(args.tasks))
    engines = list(dict.fromkeys(args.engines))
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)

    rows = []
    started = time.time()
    print(
        f"{'task':<12} {'engine':<17} {'judged':<14} {'value':>8} {'bar':>8} {'s/epoch':>8}  result",
        flush=True,
    )
    for task in tasks:
        for engine in engines:
            rows.append(_one(task, engine, out, args))
            _print_row(rows[-1])
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seconds": time.time() - started,
        "rows": rows,
    }
    for row in rows:
        if row.get("machine"):
            report["machine"] = row["machine"]
            report["versions"] = {k: v for r in rows for k, v in (r.get("versions") or {}).items()}
            break
    from customfit.checkpoint import atomic_write

    atomic_write(os.path.join(out, "matrix.json"), json.dumps(report, indent=2) + "\n")
    md = matrix_markdown(report)
    atomic_write(os.path.join(out, "matrix.md"), md)
    print()
    print(md, end="")
    print(f"wrote {os.path.join(out, 'matrix.json')} and {os.path.join(out, 'matrix.md')}")
    if args.report:
        from customfit import report

        parity = {task: _parity_probe(task, engines, out) for task in tasks}
        atomic_write(os.path.join(out, "parity.json"), json.dumps(parity, indent=2) + "\n")
        print(f"wrote {report.write(out)}")
    ok = all(row["status"] == "passed" for row in rows)
    return 0 if ok else 1


# Parity of the probe: float32 objectives and gradients from shared weights, every engine within
# this (relative, by norm) of the first; the parity tests hold each family to the same.
PARITY_TOLERANCE = 1e-4


def _parity_probe(task, engines, out):
    """customfit.parity on each engine (each in its own process): their largest differences."""
    import numpy as np

    from customfit import parity

    folder = os.path.join(out, "parity")
    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, f"{task}-weights.npz")
    if os.path.exists(weights):
        os.remove(weights)  # the first engine's of this matrix, not a stale one
    results = {}
    for engine in engines:
        result = os.path.join(folder, f"{task}-{engine}.npz")
        env = dict(os.environ, KERAS_BACKEND=registry.KERAS_BACKEND[engine])
        with open(os.path.join(out, "logs", f"parity-{task}-{engine}.log"), "w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "customfit.parity", task, engine, weights, result],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if proc.returncode == 3:
            return {"error": f"task {task} has no parity probe (its spec has no parity_inputs)"}
        if proc.returncode != 0:
            return {
                "error": f"the probe failed on {engine} (exit status {proc.returncode}; "
                f"log: logs/parity-{task}-{engine}.log)"
            }
        with np.load(result) as saved:
            results[engine] = dict(saved)
    return {
        "differences": parity.compare(results),
        "tolerance": PARITY_TOLERANCE,
        "reference": engines[0],
    }


def _one(task, engine, out, args):
    run_dir = os.path.join(out, f"{task}-{engine}")
    log_path = os.path.join(out, "logs", f"{task}-{engine}.log")
    command = [
        sys.executable,
        "-m",
        "customfit",
        "run",
        task,
        "--engine",
        engine,
        "--out",
        run_dir,
        "--quiet",
    ]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)  # a stale one must not pass for this run's
    started = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    row = {
        "task": task,
        "engine": engine,
        "out": run_dir,
        "log": log_path,
        "wall_seconds": time.time() - started,
        "exit_status": proc.returncode,
    }
    if proc.returncode == 0 and os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        headline = metrics["headline"]
        row.update(
            {
                "model": metrics["model"],
                "headline": headline,
                "value": metrics[headline],
                "bar": _bar_of(metrics["bar"].get(headline)),
                "passed": metrics["passed"],
                "epochs": metrics["config"]["epochs"],
                "batch_size": metrics["config"]["batch_size"],
                "seconds_per_epoch": metrics["seconds_per_epoch"],
                "first_epoch_seconds": metrics["first_epoch_seconds"],
                "versions": metrics.get("versions"),
                "machine": metrics.get("machine"),
                "status": "passed" if metrics["passed"] else "below bar",
            }
        )
    else:
        with open(log_path) as f:
            tail = [line.strip() for line in f.read().splitlines() if line.strip()]
        row.update(
            {"status": "failed", "error": tail[-1] if tail else f"exit status {proc.returncode}"}
        )
    return row


def _bar_of(bar):
    from customfit.runs.results import describe_bar

    return "" if bar is None else describe_bar(bar)


def _print_row(row):
    if row["status"] == "failed":
        print(
            f"{row['task']:<12} {row['engine']:<17} {'-':<14} {'-':>8} {'-':>8} {'-':>8}  "
            f"failed: {row['error']} (log: {row['log']})",
            flush=True,
        )
        return
    print(
        f"{row['task']:<12} {row['engine']:<17} {row['headline']:<14} {row['value']:>8.4f} "
        f"{row['bar']:>8} {row['seconds_per_epoch']:>8.3f}  {row['status']}",
        flush=True,
    )


def _seconds(value):
    return "-" if value is None else f"{value:.2f}"


def matrix_markdown(report):
    lines = [
        "| task | model | engine | judged | value | bar | s/epoch | first epoch (s) | epochs x batch | result |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in report["rows"]:
        if row["status"] == "failed":
            lines.append(
                f"| {row['task']} | | {row['engine']} | | | | | | | failed: {row['error']} |"
            )
            continue
        lines.append(
            f"| {row['task']} | {row['model']} | {row['engine']} | {row['headline']} | {row['value']:.4f} "
            f"| {row['bar']} "
            f"| {row['seconds_per_epoch']:.3f} | {_seconds(row['first_epoch_seconds'])} "
            f"| {row['epochs']} x {row['batch_size']} | {row['status']} |"
        )
    machine = report.get("machine") or {}
    versions = report.get("versions") or {}
    lines += [
        "",
        f"Measured {report['date']} on {machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} cores), "
        f"{machine.get('platform', '?')}.",
        "s/epoch: mean training time of epochs 2 onwards (epoch 1 includes tracing and compiling).",
    ]
    if versions:
        lines.append(
            "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + "."
        )
    return "\n".join(lines) + "\n"
