"""The documentation site (`./run docs`): mkdocs-material and mkdocstrings build it offline, in
strict mode, so that a broken link, a missing snippet file or section, or a reference to a name
that does not exist fails the build. Built once here from a copy of what it reads, into a
temporary folder; every exercise page is then opened in headless Chromium (Debian's package),
served over HTTP as a reader's browser would get it."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_report import chromium  # Debian's package, or another Chromium on PATH

ROOT = Path(__file__).resolve().parent.parent
READS = ("mkdocs.yml", "docs", "examples", "customfit", "README.md")
EXERCISES = ("classifiers", "adversarial", "vae", "gan", "score", "mnist")
GUIDES = "keras-model command-line devices precision stops speed report development".split()
PAGES = ["index.html", "reference/index.html", "examples/index.html", "tasks/index.html"]
PAGES += [f"exercises/{name}/index.html" for name in EXERCISES]
PAGES += [f"guides/{name}/index.html" for name in GUIDES]
TABS = ["Keras (cf.Model)", "TensorFlow", "PyTorch", "Flax NNX"]
# The most a figure under docs/ may weigh: a picture, an animation.
MOST_BYTES = {".png": 200_000, ".gif": 700_000}


def _copy(to):
    for name in READS:
        source, target = ROOT / name, to / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return to


def _build(folder):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env.pop("PYTHONPATH", None)  # mkdocstrings reads the copy's customfit/ (paths: ["."])
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder / "site")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once for this module's tests: its folder."""
    folder = _copy(tmp_path_factory.mktemp("docs"))
    proc = _build(folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "site"


def test_the_site_builds_with_every_page(site):
    for page in PAGES:
        assert (site / page).exists(), page
    reference = (site / "reference" / "index.html").read_text()
    for (
        name
    ) in "Model objective updates Update grad value_and_grad divergence frozen run Result".split():
        assert re.search(rf'id="customfit\.[\w.]*\b{name}"', reference), name
        assert f">{name}<" in reference, name
    examples = (site / "examples" / "index.html").read_text()
    assert examples.count("CUSTOMFIT_QUICK") >= 6  # each script's own text, not a link to it
    tasks = (site / "tasks" / "index.html").read_text()
    # the matrix: every task's row, not only toy and digits
    rows = ("keras-jax", "adversarial, pgd eps 0.3", "vae default", "gan default", "score dsm")
    for row in (*rows, "score-digits", "mnist on real MNIST"):
        assert row in tasks, row


@pytest.mark.parametrize("name", EXERCISES)
def test_an_exercise_page_has_its_parts(site, name):
    """The four tabs in order, each with the engine's model, objective and step from its file;
    a measured table per engine; the note on where the lecture is wrong."""
    page = (site / "exercises" / name / "index.html").read_text()
    assert re.findall(r'<label for="__tabbed_1_\d">([^<]*)</label>', page) == TABS
    blocks = page.split('<div class="tabbed-block">')[1:]
    assert len(blocks) == 4
    for block in blocks:
        assert block.count('<div class="highlight">') >= 3  # model, objective, one step
    assert "customfit run " in page and "keras-jax</th>" in page
    assert "Where the lecture" in page and 'class="admonition warning"' in page


def test_no_figure_is_too_heavy():
    figures = [p for p in (ROOT / "docs").rglob("*") if p.suffix in MOST_BYTES]
    weights = {p.relative_to(ROOT): p.stat().st_size for p in figures}
    assert len(weights) >= 15, weights  # the exercises' figures are there
    assert "(docs/exercise-page.png)" in (ROOT / "README.md").read_text()  # the screenshot
    assert (ROOT / "docs" / "exercise-page.png") in figures
    heavy = {str(p): size for p, size in weights.items() if size > MOST_BYTES[p.suffix]}
    assert heavy == {}


def snippet(reference):
    return f'\n```python\n--8<-- "{reference}"\n```\n'


BROKEN = [
    ("docs/index.md", "\nSee [the missing page](nowhere.md).\n", "nowhere.md"),
    ("docs/reference.md", "\n::: customfit.core.ops.no_such_name\n", "no_such_name"),
    ("docs/examples.md", snippet("examples/no_such_example.py"), "no_such_example"),
    # a file that is there, a section that is not
    ("docs/exercises/gan.md", snippet("customfit/tasks/gan/with_torch.py:no_such"), "'no_such'"),
]


@pytest.mark.parametrize("page, broken, said", BROKEN)
def test_a_broken_reference_fails_the_build(page, broken, said, tmp_path):
    folder = _copy(tmp_path)
    with open(folder / page, "a") as f:
        f.write(broken)
    proc = _build(folder)
    assert proc.returncode != 0, f"the build passed with {broken.strip()!r} in {page}"
    assert said in proc.stderr + proc.stdout


# Injected first into <head> of a copy of each page: records console errors and uncaught
# exceptions from the start; probePage() clicks every tab and says what it saw.
PROBE = """<script>
window.probeErrors = [];
const reported = console.error.bind(console);
console.error = (...args) => { window.probeErrors.push(args.map(String).join(' ')); reported(...args); };
window.addEventListener('error', e => window.probeErrors.push('error: ' + (e.message || e.target.src || e.target.href)), true);
window.addEventListener('unhandledrejection', e => window.probeErrors.push('rejection: ' + e.reason));
window.probePage = () => {
  const tabs = [];
  for (const set of document.querySelectorAll('.tabbed-set')) {
    const blocks = Array.from(set.querySelectorAll(':scope > .tabbed-content > .tabbed-block'));
    set.querySelectorAll(':scope > .tabbed-labels > label').forEach((label, i) => {
      label.click();
      const shown = blocks.filter(b => getComputedStyle(b).display !== 'none');
      const code = shown.length === 1 && shown[0] === blocks[i]
        ? Array.from(shown[0].querySelectorAll('pre code')).map(c => c.innerText.trim()) : [];
      tabs.push({label: label.innerText.trim(), shown: shown.length, code: code.map(c => c.length)});
    });
  }
  const images = Array.from(document.images);
  return {tabs, images: images.length, errors: window.probeErrors,
          failed: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};
};
</script>"""

# One browser for every page (a browser's start is most of the time): this page opens each in
# an iframe in turn, asks its probe, and writes the answers into the DOM as JSON (which
# --dump-dom prints).
VISITOR = """<!doctype html><html><body><script>
(async () => {
  const seen = {};
  try {
    for (const page of PAGES) {
      const frame = document.createElement('iframe');
      frame.width = 1200; frame.height = 900;
      const loaded = new Promise(resolve => frame.addEventListener('load', resolve));
      frame.src = page;
      document.body.appendChild(frame);
      await loaded;
      await new Promise(resolve => setTimeout(resolve, 200));
      seen[page] = frame.contentWindow.probePage();
    }
  } catch (e) { seen.visitor = String(e); }
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
})();
</script></body></html>"""


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on a free port of 127.0.0.1: its address."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def open_in_chromium(browser, url):
    """What the visitor page at url wrote into the DOM."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    flags += [
        "--virtual-time-budget=10000",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    done = subprocess.run([browser, *flags, url], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_every_exercise_page_in_headless_chromium(site, served):
    browser = chromium()
    if browser is None:
        pytest.skip(
            "no Chromium on this machine (`./run tests` installs Debian's package "
            "`chromium` where it may): the HTML checks above read the pages instead"
        )
    pages = {}
    for name in EXERCISES:
        index = site / "exercises" / name / "index.html"
        probed = index.with_name("probed.html")  # a copy beside it: the same relative links
        probed.write_text(index.read_text().replace("<head>", "<head>" + PROBE, 1))
        pages[f"/exercises/{name}/probed.html"] = name
    visitor = VISITOR.replace("PAGES", json.dumps(list(pages)))
    (site / "visitor.html").write_text(visitor)
    seen_on = {
        pages.get(page, page): seen
        for page, seen in open_in_chromium(browser, f"{served}/visitor.html").items()
    }
    assert sorted(seen_on) == sorted(EXERCISES), seen_on
    for name, seen in seen_on.items():
        assert [tab["label"] for tab in seen["tabs"]] == TABS, (name, seen)
        for tab in seen["tabs"]:
            assert tab["shown"] == 1 and len(tab["code"]) >= 3, (name, tab)
            assert min(tab["code"]) > 0, (name, tab)  # every code block has text
        assert seen["images"] >= 2 and seen["failed"] == [], (name, seen)
        assert seen["errors"] == [], (name, seen["errors"])
