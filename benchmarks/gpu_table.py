"""Exercise 10's table: each engine's training steps/s on the CPU and on the GPU, and the
speed-up, from two `customfit bench` records (bench.json) of the same settings; with a GPU
record that also timed `--precision mixed`, the mixed / float32 speed-up on the GPU beside it.

    python benchmarks/gpu_table.py CPU/bench.json [GPU/bench.json] > cpu_gpu.md

Without a GPU record the table has the CPU column alone and says so. Each engine's default mode
(what `customfit run` trains with) is compared."""

import json
import sys

ENGINES = ("tensorflow", "torch", "flax", "keras-tensorflow", "keras-torch", "keras-jax")


def _number(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def default_cells(record, precision="float32"):
    """(task, batch size, engine) -> steps/s of the engine's default mode at `precision`."""
    found = {}
    for cell in record["cells"]:
        policy = cell.get("precision", "float32")
        if (
            cell.get("default_mode")
            and "steps_per_second" in cell
            and (policy == "float32") == (precision == "float32")
        ):
            found[cell["task"], cell["batch_size"], cell["engine"]] = cell["steps_per_second"]
    return found


def _devices(record):
    return sorted({c.get("device", "cpu") for c in record["cells"]})


def table(cpu, gpu=None):
    on_cpu = default_cells(cpu)
    on_gpu = default_cells(gpu) if gpu else {}
    mixed_gpu = default_cells(gpu, "mixed") if gpu else {}
    machine = cpu["machine"]
    lines = [
        f"CPU: {machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores, "
        f"measured {cpu['date']} (computed on: {', '.join(_devices(cpu))})."
    ]
    if gpu:
        lines.append(
            f"GPU record: measured {gpu['date']} on {gpu['machine'].get('platform', '?')}"
            f" (computed on: {', '.join(_devices(gpu))}); GPU: {gpu.get('gpu', '?')}."
        )
    else:
        lines.append(
            "No GPU record: no GPU was visible to the frameworks on this machine, so "
            "only the CPU column is measured."
        )
    lines += [
        "",
        "| task | batch | engine | CPU steps/s | GPU steps/s | GPU / CPU"
        + (" | GPU mixed steps/s | mixed / float32 on GPU" if mixed_gpu else "")
        + " |",
        "| --- | ---: | --- | ---: | ---: | ---:" + (" | ---: | ---:" if mixed_gpu else "") + " |",
    ]
    keys = sorted(
        set(on_cpu) | set(on_gpu),
        key=lambda k: (k[0], k[1], ENGINES.index(k[2]) if k[2] in ENGINES else 99),
    )
    for key in keys:
        c, g, m = on_cpu.get(key), on_gpu.get(key), mixed_gpu.get(key)
        row = (
            f"| {key[0]} | {key[1]} | {key[2]} | {_number(c)} | {_number(g)} | "
            f"{_number(g / c if c and g else None, 2)}"
        )
        if mixed_gpu:
            row += f" | {_number(m)} | {_number(m / g if m and g else None, 2)}"
        lines.append(row + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) not in (1, 2):
        print(__doc__.splitlines()[3].strip(), file=sys.stderr)
        return 2
    records = [json.load(open(path)) for path in argv]
    sys.stdout.write(table(*records))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
