"""The API reference: every public name has a docstring with its arguments, what it returns and
an example, and docs/api.md is what docs/make_api.py makes of those docstrings (not stale)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {
    "cf.Model",
    "cf.Model.objective",
    "cf.Model.updates",
    "cf.Model.after_step",
    "cf.Model.compile",
    "cf.Update",
    "cf.ops.grad",
    "cf.ops.value_and_grad",
    "cf.ops.divergence",
    "cf.frozen",
    "cf.run",
    "cf.Result",
    "cf.compare",
}

# Imports Keras (on jax), so it runs in a process of its own: the test process keeps no backend.
DUMP = """
import dataclasses, inspect, json, sys
sys.path.insert(0, "docs")
import make_api
names = {}
for title, value in make_api.public_names():
    try:
        params = [p.name if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) else "**" + p.name
                  for p in inspect.signature(value).parameters.values() if p.name != "self"]
    except (TypeError, ValueError):
        params = []
    names[title] = {"doc": inspect.getdoc(value) or "", "class": inspect.isclass(value),
                    "dataclass": dataclasses.is_dataclass(value), "params": params}
print(json.dumps(names))
"""


def _run(*args):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def documented():
    proc = _run("-c", DUMP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_public_names_are_the_documented_ones(documented):
    assert set(documented) == PUBLIC


@pytest.mark.parametrize("title", sorted(PUBLIC))
def test_every_public_name_has_its_arguments_returns_and_an_example(title, documented):
    entry = documented[title]
    doc = entry["doc"]
    lines = doc.splitlines()
    assert len(lines) > 3 and lines[0].strip(), f"{title}: no summary line"
    assert "\nExample:\n" in doc, f"{title}: no Example section"
    example = doc.split("\nExample:\n", 1)[1]
    assert example.startswith("    ```python\n") and example.rstrip().endswith("```"), (
        f"{title}: its Example is not a python code block"
    )
    assert len(example.splitlines()) > 2, f"{title}: an empty Example"
    if entry["dataclass"]:
        assert "\nAttributes:\n" in doc or "\nArgs:\n" in doc, f"{title}: no Attributes or Args"
        for field in entry["params"]:
            assert any(
                line.startswith(f"    {field}") or f", {field}:" in line for line in lines
            ), f"{title}: attribute {field} undocumented"
    elif not entry["class"]:
        assert "\nReturns:\n" in doc, f"{title}: no Returns section"
        if entry["params"]:
            assert "\nArgs:\n" in doc, f"{title}: no Args section"
        for param in entry["params"]:
            assert f"\n    {param}: " in doc, f"{title}: argument {param} undocumented"
    elif entry["params"] and title != "cf.Model":  # cf.Model takes keras.Model's arguments
        assert "\nArgs:\n" in doc
        for param in entry["params"]:
            assert f"\n    {param}: " in doc, f"{title}: argument {param} undocumented"


def test_api_page_is_generated_from_the_docstrings():
    proc = _run("docs/make_api.py", "--check")
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = (ROOT / "docs" / "api.md").read_text()
    for title in PUBLIC:
        assert f"# {title}\n" in page, title
