"""A run's hold on its output folder: made if missing, locked against a second run, tidied.

- Made with its missing parents; if that fails (`--out /proc/x`), what was made is removed and the
  user gets one line (UsageError, exit status 2).
- Locked with flock(2) on DIR/.customfit.lock: a second run on the same folder is refused with one
  line naming the process that holds it. The kernel drops the lock when its process ends however
  it ends, SIGKILL included, so a dead run never leaves the folder locked.
- Temporary files that a killed run left half written (checkpoint.atomic_write's .NAME.*.tmp) are
  removed once the lock is held: nobody else can be writing them.
- A run that fails before writing anything leaves no folder behind if it made the folder.
"""

import contextlib
import fcntl
import os
import time

from customfit.checkpoint import TEMP_PREFIX, TEMP_SUFFIX
from customfit.errors import UsageError

LOCK = ".customfit.lock"


def make(folder, field="out"):
    """Make `folder` and its missing parents; returns the folders made, outermost first. On
    failure removes them and raises UsageError (one line)."""
    folder = os.path.abspath(os.fspath(folder))
    missing = []
    probe = folder
    while not os.path.isdir(probe):
        if os.path.lexists(probe):
            raise UsageError.expected(
                field,
                "a folder (or a path where one can be made)",
                given=f"{_shown(folder)!r}, where {_shown(probe)!r} is a file",
            )
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    made = []
    try:
        for path in reversed(missing):
            os.mkdir(path)
            made.append(path)
    except OSError as e:
        remove_made(made)
        raise UsageError.expected(
            field,
            "a folder that can be made and written",
            given=f"{_shown(folder)!r} ({e.strerror or e})",
        ) from None
    return made


def remove_made(made):
    """Remove folders that `make` made, innermost first, where they are still empty."""
    for path in reversed(made):
        try:
            os.rmdir(path)
        except OSError:
            break


def _shown(path):
    """The path as the user probably wrote it: relative to here when it is below here."""
    here = os.getcwd()
    return os.path.relpath(path, here) if path.startswith(here + os.sep) else path


class Lock:
    """flock(2) on FOLDER/.customfit.lock, non-blocking; the file says who holds it."""

    def __init__(self, folder, field="out", what="a run"):
        self.folder, self.field, self.what = os.fspath(folder), field, what
        self.path = os.path.join(self.folder, LOCK)
        self.fd = None

    def acquire(self):
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UsageError.expected(
                    self.field,
                    "a folder that can be written",
                    given=f"{self.folder!r} ({e.strerror or e})",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 1000).decode("utf-8", "replace").strip()
                os.close(fd)
                raise UsageError.expected(
                    self.field,
                    "an output folder that no other run is using",
                    given=f"{self.folder!r}, which {holder or 'another process'} is writing to "
                    "(wait for it to end, or give another --out)",
                ) from None
            # The holder may have removed the file between our open and our flock: then the lock
            # we hold is on a file nobody else will look at; take the one at the path instead.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        # Who holds it, for the message a second run gets; the lock itself needs no byte of disk,
        # so a full disk only loses this note.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(
                fd,
                f"process {os.getpid()} ({self.what[:200]}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})".encode(),
            )
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        # Removed while still held, so that nobody takes a lock on a file about to vanish.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def remove_stale_temporaries(folder):
    """Remove the temporary files of writes that a killed run left unfinished: in the folder and
    its subfolders (a GAN's epochs/), but not in another run's folder inside it (a matrix's)."""
    for base, subfolders, files in os.walk(folder):
        subfolders[:] = [
            d
            for d in subfolders
            if not any(
                os.path.exists(os.path.join(base, d, mark))
                for mark in (LOCK, "checkpoint.safetensors")
            )
        ]
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and name != LOCK:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(base, name))


@contextlib.contextmanager
def hold(folder, field="out", what="a run"):
    """Make (if needed), lock and tidy `folder` for one run; on the way out release the lock and,
    if this run made the folder and left nothing in it, remove it."""
    made = make(folder, field)
    lock = Lock(folder, field, what)
    try:
        lock.acquire()
    except BaseException:
        remove_made(made)
        raise
    try:
        remove_stale_temporaries(folder)
        yield lock
    finally:
        lock.release()
        if made and not os.listdir(made[-1]):
            remove_made(made)
