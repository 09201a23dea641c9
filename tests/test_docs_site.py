"""The documentation site (`./run docs`): mkdocs-material and mkdocstrings build it offline, in
strict mode, so that a broken link, a missing snippet or a reference to a name that does not
exist fails the build. Built here from a copy of what it reads, into a temporary folder."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READS = ("mkdocs.yml", "docs", "examples", "customfit", "README.md")
PAGES = ("index.html", "reference/index.html", "examples/index.html", "tasks/index.html")


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
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(folder / "site")], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_site_builds_with_every_page(tmp_path):
    proc = _build(_copy(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in PAGES:
        assert (tmp_path / "site" / page).exists(), page
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("Model", "objective", "updates", "Update", "grad", "value_and_grad",
                 "divergence", "frozen", "run", "Result"):
        assert re.search(rf'id="customfit\.[\w.]*\b{name}"', reference), name
        assert f">{name}<" in reference, name
    examples = (tmp_path / "site" / "examples" / "index.html").read_text()
    assert examples.count("CUSTOMFIT_QUICK") >= 6  # each script's own text, not a link to it
    tasks = (tmp_path / "site" / "tasks" / "index.html").read_text()
    # the README's matrix: every task's row, not only toy and digits
    for row in ("keras-jax", "adversarial, pgd eps 0.3", "vae default", "gan default",
                "score dsm", "score-digits", "mnist on real MNIST"):
        assert row in tasks, row


@pytest.mark.parametrize("page, broken, said", [
    ("docs/index.md", "\nSee [the missing page](nowhere.md).\n", "nowhere.md"),
    ("docs/reference.md", "\n::: customfit.core.ops.no_such_name\n", "no_such_name"),
    ("docs/examples.md", '\n```python\n--8<-- "examples/no_such_example.py"\n```\n', "no_such_example"),
])
def test_a_broken_reference_fails_the_build(page, broken, said, tmp_path):
    folder = _copy(tmp_path)
    with open(folder / page, "a") as f:
        f.write(broken)
    proc = _build(folder)
    assert proc.returncode != 0, f"the build passed with {broken.strip()!r} in {page}"
    assert said in proc.stderr + proc.stdout
