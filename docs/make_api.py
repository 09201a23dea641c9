"""Write docs/api.md from the docstrings of customfit's public names.

    python docs/make_api.py            # rewrite docs/api.md
    python docs/make_api.py --check    # exit 1 if docs/api.md is not what the docstrings give

The public names are customfit.__all__ (with the members of customfit.core.ops.__all__ for `ops`) and
the methods cf.Model defines itself. Docstrings use Args / Returns / Raises / Attributes /
Example sections (Google style); the Example section comes last and holds a ```python block.
"""

import inspect
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import customfit  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("Args", "Returns", "Raises", "Attributes", "Example")
LISTED = ("Args", "Raises", "Attributes")
INTRO = """# API reference

`import customfit as cf`. Importing customfit imports no framework: the names below are
resolved on first use, so set `KERAS_BACKEND` (tensorflow, torch or jax) before using them.

This page is generated from the docstrings by `python docs/make_api.py`; a test checks that
it is current and that every public name has its arguments, what it returns and an example.
"""


def _keras_model():
    import keras

    return keras.Model


def public_names():
    """(title, object) for every public name, in the order the page shows them."""
    names = []
    for name in ("Model", "Update", "ops", "frozen", "run", "Result"):
        assert name in customfit.__all__, name
    extra = sorted(set(customfit.__all__) - {"Model", "Update", "ops", "frozen", "run", "Result"})
    for name in ("Model", "Update", "ops", "frozen", "run", "Result", *extra):
        value = getattr(customfit, name)
        if name == "ops":
            for member in value.__all__:
                if member != "frozen":  # shown once, as cf.frozen
                    names.append((f"cf.ops.{member}", getattr(value, member)))
            continue
        names.append((f"cf.{name}", value))
        if name == "Model":
            # Keras's own hooks that cf.Model overrides (saving's build and compile configs)
            # are Keras's API, documented there; compile() is shown for what it changes.
            keras_hooks = set(dir(_keras_model())) - {"compile"}
            for method, function in vars(value).items():
                if not method.startswith("_") and callable(function) and method not in keras_hooks:
                    names.append((f"cf.Model.{method}", function))
    return names


def signature(title, value):
    short = title.rsplit(".", 1)[-1]
    try:
        text = str(inspect.signature(value))
    except (TypeError, ValueError):
        text = "(...)"
    if inspect.isclass(value):
        return f"class {short}{text}" if title != "cf.Model" else "class Model(keras.Model)"
    return f"{short}{text}"


def markdown(doc):
    out, section = [], None
    for line in inspect.cleandoc(doc).splitlines():
        heading = re.fullmatch(r"(\w+):", line)
        if heading and heading.group(1) in SECTIONS:
            section = heading.group(1)
            out += ["", f"**{section}**", ""]
            continue
        if section == "Example":
            out.append(line[4:] if line.startswith("    ") else line.strip())
        elif section in LISTED:
            item = re.fullmatch(r" {4}(\S[^:]*): ?(.*)", line)
            if item:
                out.append(f"- `{item.group(1)}`: {item.group(2)}".rstrip())
            elif line.strip():
                out[-1] += " " + line.strip()
        elif section == "Returns":
            if line.strip():
                out.append(line.strip()) if out[-1] == "" else out.__setitem__(
                    -1, out[-1] + " " + line.strip()
                )
        else:
            out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def page():
    parts = [INTRO]
    for title, value in public_names():
        level = "###" if title.count(".") == 2 and title.startswith("cf.Model.") else "##"
        parts.append(
            f"{level} {title}\n\n```python\n{signature(title, value)}\n```\n\n"
            f"{markdown(inspect.getdoc(value) or '')}\n"
        )
    return "\n".join(parts)


if __name__ == "__main__":
    path = os.path.join(HERE, "api.md")
    text = page()
    if sys.argv[1:] == ["--check"]:
        with open(path) as f:
            current = f.read()
        if current != text:
            sys.exit(f"{path} is not what the docstrings give: run python docs/make_api.py")
    else:
        with open(path, "w") as f:
            f.write(text)
