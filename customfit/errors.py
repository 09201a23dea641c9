"""customfit's errors. Imports nothing heavy.

A UsageError is a user's mistake (a bad flag, bad data, an unreadable checkpoint). Its message is
one line that says what was expected and what was given; the command line prints it as
`customfit: error: <field>: <message>` with exit status 2 and no traceback.
"""


class CustomfitError(Exception):
    """Base class of customfit's own errors. The command line prints one line,
    `customfit: <label>: <message>`, and exits with `exit_status`."""

    exit_status = 1
    label = "error"


def _one_line(text):
    return " ".join(str(text).split())


class UsageError(CustomfitError, ValueError):
    """A user's mistake. `field` names what was wrong ("engine", "epochs", "resume", ...) so that
    the command line can name its flag; `message` says what was expected and what was given."""

    exit_status = 2

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
        text = given if given is not None else shortened(repr(got))
        return cls(f"expected {expected}; got {text}", field=field)


class CheckpointError(UsageError):
    """A checkpoint that cannot be read, or that belongs to another run."""


class RunStopped(CustomfitError):
    """A run that stopped before its end and can be resumed: the message says where it stopped,
    what its checkpoint holds and the command that continues it."""

    def __init__(self, message):
        self.message = _one_line(message)
        super().__init__(self.message)


class NonFiniteLoss(RunStopped):
    """A training step gave a NaN or infinite loss (exit status 3)."""

    exit_status = 3


class Interrupted(RunStopped):
    """Ctrl-C (SIGINT): the run stopped at the end of a step (exit status 130, as a shell's)."""

    exit_status = 130
    label = "stopped"


class WriteError(RunStopped, OSError):
    """A file of the run could not be written (disk full, quota, a file-size limit). Still an
    OSError, for callers that catch those."""


def shortened(text, limit=200):
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
