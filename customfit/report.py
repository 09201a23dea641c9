"""`customfit report DIR` (and `customfit matrix --report`): one self-contained HTML page of a
matrix or of any folder of runs.

The page holds the tasks x engines table of each judge's headline figure against its bar (a run
below its bar, a failed run and a short run marked), the parity probe's results where the matrix
measured them (parity.json, see customfit.parity), and per run: its figures (PNG and GIF, inlined
as data URIs), its judged figures, settings, timings and versions. Nothing on the page refers to
the network or to another file. Imports no framework.
"""

import base64
import html
import json
import os
import time

from customfit import registry
from customfit.errors import UsageError

PAGE = "report.html"
_IMAGES = {".png": "image/png", ".gif": "image/gif"}
# What a cell shows: a run at its bar, below it, failed, or shorter than the task's defaults.
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #eee; } td.name { text-align: left; }
td.passed { background: #e3f6e3; } td.below { background: #fde8c8; } td.failed { background: #f8d0d0; }
td.missing { color: #999; text-align: center; }
.short { font-size: 0.8em; color: #a05a00; display: block; }
.run { border-top: 2px solid #ccc; margin-top: 2em; }
.figures img { max-width: 32em; margin: 0.5em; border: 1px solid #ddd; vertical-align: top; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _fmt(value):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _bar_text(bar):
    if isinstance(bar, (list, tuple)):
        return f"{bar[0]} {_fmt(bar[1])}"
    return f">= {_fmt(bar)}"


def find_runs(folder):
    """The runs a folder holds: (rows of matrix.json or None, {run folder: metrics}, parity)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UsageError.expected(
            "dir",
            "a folder of runs (metrics.json) or of a matrix (matrix.json)",
            given=f"{folder!r}, which "
            + ("is a file" if os.path.exists(folder) else "does not exist"),
        )
    rows = None
    matrix = os.path.join(folder, "matrix.json")
    if os.path.isfile(matrix):
        try:
            with open(matrix) as f:
                rows = json.load(f)["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError.expected(
                "dir", "a readable matrix.json", given=f"{matrix}, which cannot be read"
            ) from None
    candidates = [folder] + sorted(os.path.join(folder, name) for name in os.listdir(folder))
    runs = {}
    for candidate in candidates:
        path = os.path.join(candidate, "metrics.json")
        if os.path.isfile(path):
            metrics = _json_or_none(path)
            if isinstance(metrics, dict) and {"task", "engine", "headline"} <= set(metrics):
                runs[candidate] = metrics
    if not runs and not rows:
        raise UsageError.expected(
            "dir",
            "a folder of runs (metrics.json) or of a matrix (matrix.json)",
            given=f"{folder!r}, which holds neither",
        )
    parity_path = os.path.join(folder, "parity.json")
    parity = _json_or_none(parity_path) if os.path.isfile(parity_path) else None
    return rows, runs, parity


def _json_or_none(path):
    """A JSON file's contents, or None where it cannot be read (the report skips it)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def short_run(metrics):
    """Words saying how a run fell short of its task's default length, or None."""
    try:
        spec = registry.spec(metrics["task"])
    except (ImportError, KeyError):
        return None
    model = metrics.get("model", spec.DEFAULTS["model"])
    config = metrics.get("config") or {}
    defaults = registry.defaults(spec, model, config)
    epochs = config.get("epochs")
    if isinstance(epochs, int) and epochs < defaults["epochs"]:
        return f"short run: {epochs} of {defaults['epochs']} epochs"
    return None


def _data_uri(path):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f"data:{_IMAGES[os.path.splitext(path)[1].lower()]};base64,{data}"


def _cells(rows, runs):
    """{(task, engine): cell dict} from the runs found and the matrix's rows (failed ones too)."""
    cells = {}
    for folder, metrics in runs.items():
        headline = metrics["headline"]
        bar = (metrics.get("bar") or {}).get(headline)
        cells[(metrics["task"], metrics["engine"])] = {
            "value": metrics.get(headline),
            "headline": headline,
            "bar": bar,
            "status": "passed" if metrics.get("passed") else "below",
            "short": short_run(metrics),
            "folder": folder,
            "anchor": f"run-{metrics['task']}-{metrics['engine']}",
        }
    for row in rows or []:
        key = (row.get("task"), row.get("engine"))
        if row.get("status") == "failed" and key not in cells:
            cells[key] = {"status": "failed", "error": row.get("error", ""), "short": None}
    return cells


def _order(names, known):
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def _table(cells):
    tasks = _order({t for t, _ in cells}, registry.TASKS)
    engines = _order({e for _, e in cells}, registry.ENGINES)
    out = ["<table id='matrix'><tr><th>task</th>"]
    out += [f"<th>{html.escape(e)}</th>" for e in engines]
    out.append("</tr>")
    for task in tasks:
        out.append(f"<tr><td class='name'>{html.escape(task)}</td>")
        for engine in engines:
            cell = cells.get((task, engine))
            if cell is None:
                out.append("<td class='missing cell'>-</td>")
                continue
            if cell["status"] == "failed":
                out.append(
                    f"<td class='failed cell' data-task='{html.escape(task)}' "
                    f"data-engine='{html.escape(engine)}'>failed<br>"
                    f"<small>{html.escape(cell['error'][:200])}</small></td>"
                )
                continue
            short = (
                f"<span class='short'>{html.escape(cell['short'])}</span>" if cell["short"] else ""
            )
            bar = (
                ""
                if cell["bar"] is None
                else f"<br><small>bar {html.escape(_bar_text(cell['bar']))}</small>"
            )
            word = "passed" if cell["status"] == "passed" else "below bar"
            out.append(
                f"<td class='{cell['status']} cell' data-task='{html.escape(task)}' "
                f"data-engine='{html.escape(engine)}'><a href='#{cell['anchor']}'>"
                f"{html.escape(cell['headline'])} {html.escape(_fmt(cell['value']))}</a>"
                f"{bar}<br><small>{word}</small>{short}</td>"
            )
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _parity(parity):
    if not parity:
        return (
            "<p>No parity probe in this folder (<code>customfit matrix --report</code> runs "
            "one per task and engine).</p>"
        )
    out = [
        "<table id='parity'><tr><th>task</th><th>engine</th><th>largest relative "
        "difference to the first engine</th><th>tolerance</th><th>result</th></tr>"
    ]
    for task, result in parity.items():
        tolerance = result.get("tolerance")
        if "error" in result:
            out.append(
                f"<tr><td class='name'>{html.escape(task)}</td><td colspan='4' class='name'>"
                f"{html.escape(result['error'])}</td></tr>"
            )
            continue
        for engine, diff in result.get("differences", {}).items():
            ok = diff <= tolerance
            out.append(
                f"<tr><td class='name'>{html.escape(task)}</td><td class='name'>"
                f"{html.escape(engine)}</td><td>{diff:.2e}</td><td>{tolerance:g}</td>"
                f"<td class='{'passed' if ok else 'failed'}'>{'equal' if ok else 'differs'}"
                "</td></tr>"
            )
    out.append("</table>")
    return "".join(out)


def _run_section(folder, metrics):
    task, engine = metrics["task"], metrics["engine"]
    config = metrics.get("config") or {}
    headline = metrics["headline"]
    bars = metrics.get("bar") or {}
    judged = "".join(
        f"<tr><td class='name'>{html.escape(k)}</td><td>{html.escape(_fmt(metrics.get(k)))}</td>"
        f"<td>{html.escape(_bar_text(bars[k])) if k in bars else ''}</td></tr>"
        for k in [headline] + [k for k in bars if k != headline]
    )
    settings = ", ".join(f"{k} {html.escape(_fmt(v))}" for k, v in config.items() if k != "model")
    versions = ", ".join(
        f"{html.escape(k)} {html.escape(str(v))}"
        for k, v in sorted((metrics.get("versions") or {}).items())
    )
    timings = (
        f"{_fmt(metrics.get('seconds_per_epoch'))} s per epoch (epochs 2 onwards), first "
        f"epoch {_fmt(metrics.get('first_epoch_seconds'))} s, producing what the judge "
        f"reads {_fmt(metrics.get('produce_seconds'))} s, {_fmt(metrics.get('total_seconds'))}"
        f" s in all"
    )
    figures = []
    for name in sorted(os.listdir(folder)):
        if os.path.splitext(name)[1].lower() in _IMAGES:
            path = os.path.join(folder, name)
            figures.append(
                f"<figure style='display:inline-block'><img src='{_data_uri(path)}' "
                f"alt='{html.escape(name)}'><figcaption>{html.escape(name)}"
                "</figcaption></figure>"
            )
    short = short_run(metrics)
    status = "passed" if metrics.get("passed") else "below its bar"
    machine = metrics.get("machine") or {}
    return (
        f"<section class='run' id='run-{html.escape(task)}-{html.escape(engine)}'>"
        f"<h2>{html.escape(task)} on {html.escape(engine)}: {status}"
        f"{' (' + html.escape(short) + ')' if short else ''}</h2>"
        f"<p>{html.escape(metrics.get('judge', ''))}</p>"
        f"<table><tr><th>figure</th><th>value</th><th>bar</th></tr>{judged}</table>"
        f"<p>model {html.escape(str(metrics.get('model')))}; {settings}</p>"
        f"<p>{html.escape(timings)}; {html.escape(str(metrics.get('date', '')))} on "
        f"{html.escape(str(machine.get('cpu', '?')))} ({html.escape(str(machine.get('cpu_count', '?')))} cores)</p>"
        f"<p>versions: {versions}</p>"
        f"<div class='figures'>{''.join(figures)}</div></section>"
    )


def render(folder):
    """The page's HTML for `folder` (see find_runs)."""
    rows, runs, parity = find_runs(folder)
    cells = _cells(rows, runs)

    def place(item):
        task, engine = item[1]["task"], item[1]["engine"]
        return (
            registry.TASKS.index(task) if task in registry.TASKS else len(registry.TASKS),
            task,
            registry.ENGINES.index(engine) if engine in registry.ENGINES else len(registry.ENGINES),
        )

    sections = [_run_section(f, m) for f, m in sorted(runs.items(), key=place)]
    title = f"customfit: {len(runs)} run{'s' if len(runs) != 1 else ''} in {os.path.basename(os.path.abspath(folder))}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Made {time.strftime('%Y-%m-%d %H:%M:%S %z')}. Each cell: the judge's headline figure "
        "against its bar; a short run trained fewer epochs than its task's defaults.</p>"
        f"{_table(cells)}<h2>Parity</h2>{_parity(parity)}{''.join(sections)}</body></html>\n"
    )


def write(folder):
    """Write FOLDER/report.html; returns its path."""
    from customfit.checkpoint import atomic_write

    page = render(folder)
    path = os.path.join(os.fspath(folder), PAGE)
    atomic_write(path, page)
    return path
