"""A task's own options (--method, --eps, --steps, ...): declared once in its spec, checked like
every other flag, shown by `customfit list`, given to the command line and to cf.run alike.
Imports no framework."""

from dataclasses import dataclass

from customfit import validate


@dataclass(frozen=True)
class Option:
    """kind: "choice" (one of `choices`), "int" (an integer in [low, high]), "float" (a number in
    (low, high] when low_open, else [low, high]), or "path" (an existing folder).
    default: the value when not given (None: the spec decides, e.g. from another option).
    pinned: a resumed run must keep it (it decides the numbers), like batch size."""

    name: str
    kind: str
    help: str
    default: object = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    pinned: bool = True
    flag: str | None = None  # the command-line spelling, when not --name-with-dashes
    # A default that depends on the other options (steps per method) is a function of them,
    # described in words here.
    default_text: str | None = None

    @property
    def cli_flag(self):
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value):
        """The value as the task will use it; a UsageError (one line) if it is not acceptable."""
        if self.kind == "choice":
            return validate.one_of(self.name, value, self.choices)
        if self.kind == "int":
            return validate.int_in(self.name, value, self.low, self.high)
        if self.kind == "float":
            return validate.float_in(self.name, value, self.low, self.high, self.low_open)
        if self.kind == "path":
            return validate.folder(self.name, value)
        raise ValueError(f"unknown option kind {self.kind!r}")

    def describe(self):
        if self.kind == "choice":
            what = "|".join(self.choices)
        elif self.kind in ("int", "float"):
            left = "(" if self.low_open else "["
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            what = f"{self.kind} in {left}{low}, {high}]"
        else:
            what = "DIR"
        if self.default_text:
            default = f", default {self.default_text}"
        else:
            default = (
                ""
                if self.default is None or callable(self.default)
                else f", default {self.default}"
            )
        return f"{self.cli_flag} {what}{default}: {self.help}"


def resolve(spec, given):
    """The task's options from `given` (name -> raw value, None or absent when not given):
    checked, with the spec's defaults filled in. Raises UsageError naming an option the task
    does not have."""
    from customfit import registry

    options = registry.hook(spec, "OPTIONS")
    for name, value in given.items():
        if value is not None and name not in options:
            has = ", ".join(o.cli_flag for o in options.values()) or "none"
            raise validate.UsageError.expected(
                name,
                f"an option of task {spec.NAME} (its options: {has})",
                given=f"{name!r}, which task {spec.NAME} does not have",
            )
    resolved = {
        name: (option.check(given[name]) if given.get(name) is not None else option.default)
        for name, option in options.items()
    }
    for name, value in resolved.items():
        if callable(value):
            resolved[name] = value(resolved)
    return resolved
