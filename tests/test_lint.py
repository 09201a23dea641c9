"""The code's style, sizes and floors, held by the tools that check them: ruff's linter and
formatter, import-linter (the layers, the library's apartness and the independence of task families, in
pyproject.toml)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def tool(name, *args, cwd=ROOT):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.fail(
            f"{name} is not installed beside {sys.executable}: `./run tests` installs it "
            "(the test extra in pyproject.toml)"
        )
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    done = tool("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_tree_is_formatted():
    done = tool("ruff", "format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def lines_of(pattern):
    return {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in Path(ROOT).glob(pattern)
    }


def test_a_framework_file_reads_like_a_tutorial_in_200_lines():
    """Each family's framework file holds the networks, the losses, the step and the loop; the
    plumbing lives in customfit/trainers/ (counted as formatted)."""
    sizes = lines_of("customfit/tasks/*/with_*.py")
    assert len(sizes) == 20, sorted(sizes)
    assert {f: n for f, n in sizes.items() if n > 200} == {}


def test_no_module_passes_400_lines():
    sizes = lines_of("customfit/**/*.py")
    assert {f: n for f, n in sizes.items() if n > 400} == {}


def test_the_floors_hold():
    done = tool("lint-imports")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_a_closure_over_a_loop_variable_is_caught(tmp_path):
    """The configuration does select bugbear's B023 (ten such closures were found once)."""
    (tmp_path / "pyproject.toml").write_text(
        open(os.path.join(ROOT, "pyproject.toml")).read().split("[tool.importlinter]")[0]
    )
    (tmp_path / "late.py").write_text(
        "def make():\n    fns = []\n    for i in range(3):\n        fns.append(lambda: i)\n"
        "    return fns\n"
    )
    done = tool("ruff", "check", "late.py", cwd=tmp_path)
    assert done.returncode == 1
    assert "B023" in done.stdout, done.stdout
