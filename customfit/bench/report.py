"""bench.md from bench.json's record: every cell, then the ratios side by side."""

KERAS = ("keras-tensorflow", "keras-torch", "keras-jax")
NATIVE = ("tensorflow", "torch", "flax")


def _number(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(result):
    settings, machine = result["settings"], result["machine"]
    load = ", ".join(f"{x:.1f}" for x in result.get("load_average", ()))
    lines = [
        f"Measured {result['date']} on {machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} "
        f"cores, load average {load} at the end), {machine.get('platform', '?')}.",
        f"Each cell: {settings['warmup']} untimed pass(es), then the median of "
        f"{settings['repeats']} timed passes of {settings['steps']} training steps "
        "(train_epoch, as `customfit run` trains), one process per engine.",
    ]
    devices = sorted({c.get("device", "cpu") for c in result["cells"]})
    lines.append(f"Computed on: {', '.join(devices)}.")
    lines += threads_lines(result)
    kept = {c.get("freed_memory_kept") for c in result["cells"]}
    if kept and kept <= {True, False}:
        said = "yes" if kept == {True} else "no" if kept == {False} else "in some processes"
        lines.append(
            f"Freed memory kept in each process for reuse (customfit/cpu_memory.py): {said}."
        )
    for task, note in result.get("data", {}).items():
        lines.append(f"{task} data: {note}.")
    lines += [
        "",
        "| task | engine | batch | precision | mode | steps/s | samples/s | CPU / wall | "
        "steps per CPU s | reference (same process) | its steps/s | its CPU / wall | ratio |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for cell in result["cells"]:
        head = (
            f"| {cell['task']} | {cell['engine']} | {cell['batch_size']} | "
            f"{_precision(cell)} | {cell['mode']}"
        )
        if "skipped" in cell or "error" in cell:
            what = (
                f"skipped: {cell['skipped']}" if "skipped" in cell else f"failed: {cell['error']}"
            )
            lines.append(f"{head} | - | - | - | - | {what} | | | |")
            continue
        reference = cell.get("reference") or {}
        lines.append(
            f"{head}{' (default)' if cell['default_mode'] else ''} | "
            f"{_number(cell['steps_per_second'])} | {_number(cell['samples_per_second'], 0)} | "
            f"{_number(cell.get('cpu_per_wall'), 2)} | {_number(cell.get('steps_per_cpu_second'))} | "
            f"{reference.get('name', '')} | {_number(reference.get('steps_per_second'))} | "
            f"{_number(reference.get('cpu_per_wall'), 2)} | {_number(cell.get('ratio'), 3)} |"
        )
    lines += ["", *process_lines(result), *ratios(result["cells"])]
    speedups = mixed_over_float32(result["cells"])
    if speedups:
        lines += ["", *speedups]
    versions = result.get("versions") or {}
    if versions:
        lines += [
            "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        ]
    return "\n".join(lines) + "\n"


def threads_lines(result):
    """The threads each process was held to."""
    threads = result.get("threads") or {}
    if "per_process" not in threads:  # bench.json from before --threads: the environment's
        return (
            ["Threads: " + ", ".join(f"{k}={v}" for k, v in threads.items()) + "."]
            if threads
            else []
        )
    n = threads["per_process"]
    return [
        "Threads: each framework's default (--threads 0)."
        if n is None
        else f"Threads: {n} per process (--threads {n}): {threads['how']}."
    ]


def process_lines(result):
    """Each engine's process: its CPU time and its threads' runnable time over its wall time."""
    processes = result.get("processes") or {}
    lines = []
    if processes:
        lines += [
            "Each engine's process, from before its framework started to its end: CPU time "
            "(all threads) over wall time, and its threads' time on a CPU or waiting for one over "
            "wall time (how many were ready to run; on a machine other jobs share, CPU / wall "
            "falls below it).",
            "",
            "| engine | CPUs allowed | wall s | CPU s | CPU / wall | runnable / wall |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for engine, p in processes.items():
            if p is None:
                lines.append(f"| {engine} | - | - | - | - | - |")
                continue
            cpus = p.get("cpus")
            lines.append(
                f"| {engine} | {'-' if cpus is None else ' '.join(map(str, cpus))} | "
                f"{_number(p['wall'])} | {_number(p['cpu'])} | {_number(p['cpu_per_wall'], 2)} | "
                f"{_number(p.get('runnable_per_wall'), 2)} |"
            )
        lines.append("")
    return lines


def _precision(cell):
    return cell.get("precision", "float32")  # bench.json from before --precision: float32


def ratios(cells):
    """Steps/s over the reference's, in each engine's default mode, side by side."""
    several = len({_precision(c) for c in cells}) > 1
    found = {
        (c["task"], c["batch_size"], _precision(c), c["engine"]): c.get("ratio")
        for c in cells
        if c.get("default_mode") and "ratio" in c
    }
    keys = sorted({(t, b, p) for t, b, p, _ in found})
    if not keys:
        return []
    lines = [
        "Side by side, each engine in its default mode: steps/s over the reference's "
        "(stock Keras compile(loss=...)/fit() on the same network and backend; for penalty, "
        "the hand-written Keras train_step on torch).",
        "",
        "| task | batch | "
        + ("precision | " if several else "")
        + " | ".join(f"{e} / reference" for e in KERAS + NATIVE)
        + " |",
        "| --- | ---: | "
        + ("--- | " if several else "")
        + " | ".join("---:" for _ in KERAS + NATIVE)
        + " |",
    ]
    for task, batch, policy in keys:
        row = [_number(found.get((task, batch, policy, e)), 3) for e in KERAS + NATIVE]
        lines.append(
            f"| {task} | {batch} | " + (f"{policy} | " if several else "") + " | ".join(row) + " |"
        )
    return lines


def mixed_over_float32(cells):
    """Steps/s under --precision mixed over float32's, per engine in the same mode: the
    speed-up (or, on a CPU without bfloat16 units, the slow-down) of 16-bit compute."""
    timed = {}
    for c in cells:
        if "steps_per_second" in c:
            kind = "float32" if _precision(c) == "float32" else "mixed"
            timed[(c["task"], c["batch_size"], c["mode"], c["engine"], kind)] = c
    rows = []
    for (task, batch, mode, engine, kind), mixed in timed.items():
        full = timed.get((task, batch, mode, engine, "float32"))
        if kind == "mixed" and full is not None:
            rows.append(
                f"| {task} | {batch} | {engine} | {mode} | {mixed['precision']} | "
                f"{_number(full['steps_per_second'])} | "
                f"{_number(mixed['steps_per_second'])} | "
                f"{_number(mixed['steps_per_second'] / full['steps_per_second'], 3)} |"
            )
    if not rows:
        return []
    return [
        "Mixed precision against float32, the same cell otherwise: steps/s and their ratio.",
        "",
        "| task | batch | engine | mode | mixed policy | float32 steps/s | mixed steps/s "
        "| mixed / float32 |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |",
        *rows,
    ]
