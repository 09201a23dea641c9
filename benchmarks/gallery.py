"""The keras-io gallery's full runs: each script of examples/keras_io at its default size, on the
tensorflow, torch and jax backends, one process at a time (one thread each), reading MNIST from
DATA (a folder of MNIST's four IDX files, or an .npz in Keras's mnist.npz layout).

    .venv/bin/python benchmarks/gallery.py --data ../shared/data/mnist [EXAMPLE ...]   # default: all
    .venv/bin/python benchmarks/gallery.py --collect FOLDER   # lines of runs made by hand

Results: benchmarks/results/gallery.jsonl (the line each script reports: its figure, bar,
seconds per epoch, and its lines of objective against keras-io's train_step), merged by example
and backend with an earlier run's, each line dated; pictures in docs/figures/gallery/. Then
`python docs/make_gallery.py` writes the gallery page from them.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "keras_io"
RESULTS = ROOT / "benchmarks" / "results" / "gallery.jsonl"
FIGURES = ROOT / "docs" / "figures" / "gallery"
BACKENDS = ("tensorflow", "torch", "jax")


def names():
    return sorted(p.stem for p in GALLERY.glob("*.py") if p.stem != "gallery")


def run_in_full(name, backend, data, folder, figures=FIGURES, timeout=None):
    """Run examples/keras_io/NAME.py at its default size in its own process (one thread, in
    `folder`), reading MNIST from `data`, its reported line appended to folder/line.jsonl and its
    picture saved in `figures`: the finished process."""
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        OMP_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        CUSTOMFIT_MNIST=str(Path(data).resolve()),
        CUSTOMFIT_GALLERY_OUT=str(Path(folder) / "line.jsonl"),
        CUSTOMFIT_GALLERY_FIGURES=str(figures),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(GALLERY)]),
    )
    env.pop("CUSTOMFIT_QUICK", None)
    return subprocess.run(
        [sys.executable, str(GALLERY / f"{name}.py")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(name, backend, data):
    """The example's reported line, with the date, machine and the run's wall seconds."""
    with tempfile.TemporaryDirectory() as folder:
        done = run_in_full(name, backend, data, folder)
        out = Path(folder) / "line.jsonl"
        line = json.loads(out.read_text().splitlines()[-1]) if out.exists() else {}
    line.update(
        example=name,
        backend=backend,
        passed=done.returncode == 0,
        date=date.today().isoformat(),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
    )
    if done.returncode != 0:
        line["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
    return line


def reached(value, bar):
    """Whether `value` meets a bar written as the scripts write it: ">= 0.95", "< 7.3"."""
    op, _, number = str(bar).strip().partition(" ")
    limit = float(number.split()[0])
    return {">=": value >= limit, ">": value > limit, "<=": value <= limit, "<": value < limit}[op]


def collected(folder):
    """The last line per example and backend of the JSON lines in `folder` (runs made by hand
    with CUSTOMFIT_GALLERY_OUT set), dated by their file's time, judged against their bar."""
    lines = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        day = date.fromtimestamp(path.stat().st_mtime).isoformat()
        for text in path.read_text().splitlines():
            line = json.loads(text)
            if line.get("quick"):
                continue
            line.setdefault("date", day)
            line.setdefault("machine", f"{platform.machine()}, {os.cpu_count()} cores, no GPU")
            line.setdefault("passed", reached(line["value"], line["bar"]))
            lines[(line["example"], line["backend"])] = line
    return list(lines.values())


def merged(lines):
    before = [json.loads(t) for t in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    kept = {(r["example"], r["backend"]): r for r in before}
    kept.update({(r["example"], r["backend"]): r for r in lines})
    return [kept[k] for k in sorted(kept)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="*", default=None)
    parser.add_argument("--data", help="MNIST: a folder of IDX files or an .npz")
    parser.add_argument("--collect", help="instead of running: a folder of reported lines")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS))
    args = parser.parse_args()
    if args.collect:
        RESULTS.write_text("".join(json.dumps(r) + "\n" for r in merged(collected(args.collect))))
        return
    if not args.data:
        parser.error("--data is required to run the examples")
    FIGURES.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in args.examples or names():
        for backend in args.backends:
            line = run(name, backend, args.data)
            print(json.dumps(line), flush=True)
            lines.append(line)
            RESULTS.write_text("".join(json.dumps(r) + "\n" for r in merged(lines)))


if __name__ == "__main__":
    main()
