"""The frameworks are extras: an engine whose framework is missing is refused with one line naming
the extra to install (exit status 2, nothing written), and `customfit list` marks it unavailable.

A missing framework is simulated the way Python itself blocks an import: sys.modules[name] = None
makes importlib.util.find_spec answer None and `import name` fail. tests/test_wheel.py (slow)
checks the same in a virtual environment that really has only `customfit[jax]`.
"""

import json
import os
import subprocess
import sys

import pytest

from customfit import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("keras", "tensorflow", "torch", "jax", "flax", "optax")

# engine -> (modules blocked, the line the command line must print)
REFUSALS = {
    "torch": (
        ("torch",),
        "customfit: error: --engine: expected an engine whose framework is "
        "installed (for torch: pip install 'customfit[torch]'); got 'torch' without torch installed",
    ),
    "keras-torch": (
        ("torch",),
        "customfit: error: --engine: expected an engine whose framework is "
        "installed (for keras-torch: pip install 'customfit[torch]'); got 'keras-torch' "
        "without torch installed",
    ),
    "tensorflow": (
        ("tensorflow",),
        "customfit: error: --engine: expected an engine whose framework "
        "is installed (for tensorflow: pip install 'customfit[tensorflow]'); got "
        "'tensorflow' without tensorflow installed",
    ),
    "keras-tensorflow": (
        ("tensorflow",),
        "customfit: error: --engine: expected an engine whose "
        "framework is installed (for keras-tensorflow: pip install "
        "'customfit[tensorflow]'); got 'keras-tensorflow' without tensorflow installed",
    ),
    "flax": (
        ("flax", "optax"),
        "customfit: error: --engine: expected an engine whose framework is "
        "installed (for flax: pip install 'customfit[jax]'); got 'flax' without flax and optax "
        "installed",
    ),
    "keras-jax": (
        ("jax",),
        "customfit: error: --engine: expected an engine whose framework is "
        "installed (for keras-jax: pip install 'customfit[jax]'); got 'keras-jax' without "
        "jax installed",
    ),
}


def _python(code, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("KERAS_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _blocking(modules):
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


def test_every_engine_has_an_extra_and_the_full_set_is_available_here():
    assert set(registry.EXTRA) == set(registry.ENGINES)
    assert set(registry.EXTRA.values()) == {"tensorflow", "torch", "jax"}
    assert {e: registry.missing_modules(e) for e in registry.ENGINES} == {
        e: [] for e in registry.ENGINES
    }


@pytest.mark.parametrize("engine", list(REFUSALS))
def test_an_engine_without_its_framework_is_refused_naming_the_extra(engine, tmp_path):
    blocked, line = REFUSALS[engine]
    code = _blocking(blocked) + (
        "from customfit.cli import main\n"
        f"sys.exit(main(['run', 'toy', '--engine', {engine!r}, '--out', 'out']))\n"
    )
    proc = _python(code, tmp_path)
    assert (proc.returncode, proc.stderr.splitlines(), proc.stdout) == (2, [line], "")
    assert os.listdir(tmp_path) == [], "a refused run wrote something"


def test_cf_run_raises_the_same_line(tmp_path):
    code = _blocking(["torch"]) + (
        "import customfit as cf\n"
        "from customfit.errors import UsageError\n"
        "try:\n"
        "    cf.run('toy', 'keras-torch', out='out')\n"
        "except UsageError as e:\n"
        "    print(e)\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "engine: expected an engine whose framework is installed (for "
        "keras-torch: pip install 'customfit[torch]'); got 'keras-torch' "
        "without torch installed"
    )
    assert os.listdir(tmp_path) == []


def test_list_marks_engines_without_their_framework_and_imports_none(tmp_path):
    code = _blocking(["torch", "flax"]) + (
        "import json\n"
        "from customfit.cli import main\n"
        "status = main(['list'])\n"
        f"print(json.dumps([status, sorted(m for m in sys.modules if sys.modules[m] is not None "
        f"and m.split('.')[0] in {FRAMEWORKS!r})]))\n"
    )
    proc = _python(code, tmp_path)
    *listing, last = proc.stdout.splitlines()
    assert json.loads(last) == [0, []], (last, proc.stderr)
    engines = {line.split()[0]: line for line in listing[listing.index("engines (6):") + 1 :]}
    unavailable = {e for e, line in engines.items() if "[unavailable" in line}
    assert unavailable == {"torch", "keras-torch", "flax"}
    assert engines["torch"].endswith(
        "[unavailable: torch not installed; pip install 'customfit[torch]']"
    )
    assert engines["flax"].endswith(
        "[unavailable: flax not installed; pip install 'customfit[jax]']"
    )
