"""`customfit report DIR` and `customfit matrix --report`: one self-contained HTML page.

The runs are made in this process by the real runner around test_resume's NumPy Trainer (real
metrics.json files and figures, no framework); a matrix row that failed and a parity.json are
written beside them. The page is read back with an HTML parser (every image inlined as a data URI,
nothing that would reach the network, every cell of the table) and opened in headless Chromium
where this machine has one: every image loaded, every cell there. One real `matrix --report`
(toy on two engines, one epoch) checks the parity probe end to end.
"""

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from customfit import parity, registry, report
from customfit.runs import run as run_task
from customfit.runs import launch
from test_resume import NumpyTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder with four runs (toy and digits, one short), a failed matrix row and parity."""
    folder = tmp_path_factory.mktemp("report") / "m"
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "trainer_class", lambda task, engine: NumpyTrainer)
        patch.setattr(launch, "needs_subprocess", lambda engine: False)
        patch.setenv("KERAS_BACKEND", "torch")
        patch.setattr(NumpyTrainer, "crash_in_epoch", None)
        for task, engine, epochs in (
            ("toy", "torch", 10),
            ("toy", "flax", 2),
            ("digits", "torch", 1),
            ("digits", "keras-jax", 1),
        ):
            made[(task, engine)] = run_task(
                task, engine, epochs=epochs, out=str(folder / f"{task}-{engine}"), verbose=False
            )
    rows = [
        {"task": t, "engine": e, "status": "passed" if r.passed else "below bar"}
        for (t, e), r in made.items()
    ]
    rows.append(
        {
            "task": "toy",
            "engine": "keras-torch",
            "status": "failed",
            "error": "customfit: error: something broke",
        }
    )
    (folder / "matrix.json").write_text(json.dumps({"rows": rows}))
    (folder / "parity.json").write_text(
        json.dumps(
            {
                "toy": {
                    "differences": {"torch": 0.0, "flax": 3e-7},
                    "tolerance": 1e-4,
                    "reference": "torch",
                },
                "digits": {
                    "differences": {"torch": 0.0, "keras-jax": 0.02},
                    "tolerance": 1e-4,
                    "reference": "torch",
                },
            }
        )
    )
    return folder, made


class Page(html.parser.HTMLParser):
    """What the report's HTML holds: images, links, table cells."""

    def __init__(self):
        super().__init__()
        self.images, self.references, self.cells, self.scripts = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith(("data:", "#")):
                self.references.append(attrs[key])
        if tag == "td" and "cell" in (attrs.get("class") or "").split():
            self.cells.append(attrs)


def read(path):
    page = Page()
    page.feed(open(path).read())
    return page


def test_the_page_holds_the_table_figures_parity_timings_and_versions(runs):
    folder, made = runs
    path = report.write(folder)
    text = open(path).read()
    page = read(path)
    # Every image inlined, nothing fetched: no URL, no script, no stylesheet link.
    assert page.references == [] and page.scripts == 0
    figures = sum(len([p for p in r.paths.values() if p.endswith(".png")]) for r in made.values())
    assert len(page.images) == figures == 8
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    # Every task x engine cell: four runs, the failed one, and the empty ones marked "-".
    cells = {
        (c["data-task"], c["data-engine"]): c["class"].split()[0]
        for c in page.cells
        if "data-task" in c
    }
    expected = {k: "passed" if r.passed else "below" for k, r in made.items()}
    expected[("toy", "keras-torch")] = "failed"
    assert cells == expected
    assert len(page.cells) == 2 * 4  # two tasks x four engines seen
    assert "short run: 2 of 10 epochs" in text and "short run: 1 of 30 epochs" in text
    assert "something broke" in text
    for (task, engine), result in made.items():
        assert f"accuracy {result.metrics['accuracy']:.4g}" in text
        assert f"id='run-{task}-{engine}'" in text
    assert "bar &gt;= 0.99" in text and "bar &gt;= 0.985" in text
    # Parity: the numbers and the verdict against the tolerance.
    assert re.search(r"flax</td><td>3.00e-07</td><td>0.0001</td><td class='passed'>equal", text)
    assert re.search(
        r"keras-jax</td><td>2.00e-02</td><td>0.0001</td><td class='failed'>differs", text
    )
    # Timings and versions from each metrics.json.
    metrics = json.load(open(made[("toy", "torch")].paths["metrics"]))
    assert f"{metrics['seconds_per_epoch']:.4g} s per epoch" in text
    assert f"numpy {np.__version__}" in text and "python " in text


def test_report_from_the_command_line_and_its_refusals(runs, tmp_path):
    folder, _ = runs
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "customfit", "report", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == f"wrote {folder / 'report.html'}\n", done.stderr
    (tmp_path / "empty").mkdir()
    for given, why in (("missing", "which does not exist"), ("empty", "which holds neither")):
        done = subprocess.run(
            [sys.executable, "-m", "customfit", "report", given],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and done.stderr == (
            "customfit: error: DIR: expected a folder of runs (metrics.json) or of a matrix "
            f"(matrix.json); got {given!r}, {why}\n"
        )
    assert sorted(os.listdir(tmp_path / "empty")) == []


PROBE = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    cells: document.querySelectorAll('#matrix td.cell').length,
    failed: Array.from(images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)});
  document.body.appendChild(probe);
});
</script>"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_the_page_in_headless_chromium(runs, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip(
            "no Chromium on this machine (Debian's package `chromium` brings one; "
            "Playwright's own browser download cannot be reached here): the HTML-parser "
            "test above checks the page instead"
        )
    folder, _ = runs
    path = report.write(folder)
    # The probe goes into a copy: the page itself carries no script.
    probed = tmp_path / "probed.html"
    probed.write_text(open(path).read().replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            "--virtual-time-budget=10000",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"file://{probed}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", done.stdout)
    assert found, done.stderr[-2000:]
    seen = json.loads(found.group(1).replace("&quot;", '"'))
    assert seen["images"] == 8 and seen["loaded"] == 8, seen
    assert seen["cells"] == 8, seen
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            f"file://{path}",
        ],
        capture_output=True,
        timeout=120,
    )
    assert open(shot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_parity_compares_each_engine_with_the_first():
    a = {"0": np.array([1.0, 2.0, 2.0]), "1/x": np.array(3.0)}
    b = {"0": np.array([1.0, 2.0, 2.0 + 3e-6]), "1/x": np.array(3.0)}
    c = {"0": np.array([1.0, 2.0])}
    result = parity.compare({"torch": a, "flax": b, "jax": c})
    assert (
        result["torch"] == 0.0
        and result["flax"] == pytest.approx(1e-6)
        and result["jax"] == float("inf")
    )
    tree = {"dis": (1.5, [np.ones(2), np.zeros((1, 2))]), "gen": (2.0, [np.ones(3)])}
    flat = parity._flatten(tree)
    assert sorted(flat) == ["dis/0", "dis/1/0", "dis/1/1", "gen/0", "gen/1/0"]
    back = parity._unflatten_like(tree, flat)
    np.testing.assert_array_equal(back["dis"][1][1], np.zeros((1, 2)))


def test_matrix_report_probes_parity_on_real_engines(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "customfit",
            "matrix",
            "--tasks",
            "toy",
            "--engines",
            "torch",
            "keras-torch",
            "--epochs",
            "1",
            "--out",
            "m",
            "--report",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    probed = json.loads((tmp_path / "m" / "parity.json").read_text())
    differences = probed["toy"]["differences"]
    assert differences["torch"] == 0.0 and 0.0 <= differences["keras-torch"] <= 1e-4, probed
    page = read(tmp_path / "m" / "report.html")
    assert len(page.images) == 4 and page.references == []
    assert {c["data-engine"] for c in page.cells if "data-engine" in c} == {"torch", "keras-torch"}
    assert "short run: 1 of 10 epochs" in open(tmp_path / "m" / "report.html").read()
    assert not os.path.exists(tmp_path / "m" / ".customfit.lock")
