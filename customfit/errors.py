"""customfit's errors. Imports nothing heavy.

A UsageError is a user's mistake (a bad flag, bad data, an unreadable checkpoint). Its message is
one line that says what was expected and what was given; the command line prints it as
`customfit: error: <field>: <message>` with exit status 2 and no traceback.
"""


class CustomfitError(Exception):
    """Base class of customfit's own errors."""


def _one_line(text):
    return " ".join(str(text).split())


class UsageError(CustomfitError, ValueError):
    """A user's mistake. `field` names what was wrong ("engine", "epochs", "resume", ...) so that
    the command line can name its flag; `message` says what was expected and what was given."""

    def __init__(self, message, field=None):
        self.message = _one_line(message)
        self.field = field
        super().__init__(self.message)

    def __str__(self):
        return f"{self.field}: {self.message}" if self.field else self.message

    @classmethod
    def expected(cls, field, expected, got=None, *, given=None):
        """UsageError("expected <expected>; got <repr(got)>"), or "...; got <given>" where the
        given thing is better described in words (an array's shape, a file's state)."""
        text = given if given is not None else _short(repr(got))
        return cls(f"expected {expected}; got {text}", field=field)


class CheckpointError(UsageError):
    """A checkpoint that cannot be read, or that belongs to another run."""


def _short(text, limit=200):
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
