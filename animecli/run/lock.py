"""One run at a time per output folder: ``OUTPUT/.animecli.lock``.

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds the
holder's PID, host name and process start time as one JSON line. A second
run finds it and raises :class:`~animecli.errors.LockedError` (exit 3) at
once. A lock whose holder is gone (a run killed with ``kill -9``, a reboot)
is *stale* and is taken over: on the same host, a holder is gone when its
PID is not alive, or is alive but started at another time (the PID was
reused). A lock from another host cannot be checked and is never taken over.

Taking over is race-safe: the stale file is first renamed to a name of our
own and checked to be the one judged stale; if another run got there first,
its lock is put back and this run stops.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from animecli.errors import LockedError, OutputError, UsageError

LOCK_NAME = ".animecli.lock"
# A lock file with no readable content is being written right now, unless it is older than this.
_UNREADABLE_GRACE_S = 10.0


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock.

    Attributes:
        pid: process id.
        host: host name.
        started: process start time (seconds since the epoch, as psutil reports it); 0 if unknown.
    """

    pid: int
    host: str
    started: float = 0.0

    def to_line(self) -> str:
        """The lock file's content."""
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started}) + "\n"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names, or ``None`` if it is empty or garbled."""
        try:
            data = json.loads(text)
            holder = cls(int(data["pid"]), str(data["host"]), float(data.get("started", 0.0)))
        except (ValueError, KeyError, TypeError, OverflowError):
            return None
        # No run has PID 0 or below (kill 0 / kill -1 would signal whole process groups), and a
        # start time must be a real time: anything else is a garbled file, not a holder.
        if holder.pid <= 0 or not math.isfinite(holder.started) or holder.started < 0:
            return None
        return holder

    def describe(self) -> str:
        """``PID 123 on host, running since 12:00:00``."""
        try:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else ""
        except (OverflowError, OSError, ValueError):  # a start time past what the C library can show
            since = ""
        if not since:
            return f"PID {self.pid} on {self.host}"
        return f"PID {self.pid} on {self.host}, running since {since}"


def _this_host() -> str:
    return socket.gethostname()


def _start_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return 0.0


def me() -> Holder:
    """This process as a lock holder."""
    return Holder(os.getpid(), _this_host(), _start_time(os.getpid()))


def is_alive(holder: Holder) -> bool:
    """Whether ``holder`` (on this host) is still running. A reused PID counts as gone."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    except OSError:
        return True  # cannot tell: assume alive, never steal a live lock
    if holder.started:
        started = _start_time(holder.pid)
        if started and abs(started - holder.started) > 1.0:
            return False
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder; animecli keeps its lock in a file of that name: "
                         "remove the folder and rerun") from None


class OutputLock:
    """Context manager holding ``OUTPUT/.animecli.lock`` for one run.

    Creates the output folder if needed (and removes it again on release if it
    was created here and is still empty).

    Args:
        output: the output folder.

    Attributes:
        took_over: the stale holder whose lock was taken over, if any.

    Raises:
        LockedError: another live run holds the lock (exit 3).
        OutputError: the output folder cannot be created or written (exit 1).
        UsageError: a folder stands where the lock file goes (exit 2).
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output / LOCK_NAME
        self.took_over: Holder | None = None
        self._me = me()
        self._held = False
        self._created_dir = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockedError` naming its holder."""
        try:
            self._created_dir = not self.output.is_dir()
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the output folder {self.output} ({exc.strerror or exc}); "
                "choose a writable OUTPUT"
            ) from None
        for _ in range(5):
            if self._create():
                self._held = True
                return
            text = _read(self.path)
            holder = Holder.parse(text)
            if holder is None:
                if not text and not self.path.exists():
                    continue  # released between our two looks: try again
                self._unreadable(text)
            elif holder.host != self._me.host:
                raise LockedError(
                    f"{self.output} is in use by another animecli run ({holder.describe()}), "
                    f"which cannot be checked from here; wait for it to finish, or if no run is active "
                    f"on {holder.host}, delete {self.path} and rerun"
                )
            elif is_alive(holder):
                raise LockedError(
                    f"{self.output} is in use by another animecli run ({holder.describe()}); wait for it "
                    f"to finish (or stop it: kill {holder.pid}), or write to another OUTPUT. The lock "
                    f"file is {self.path}"
                )
            if self._take_over(text):
                self.took_over = holder
        raise LockedError(
            f"could not take the lock {self.path}: other runs keep racing for it; rerun in a moment"
        )

    def _unreadable(self, text: str) -> None:
        """An empty or garbled lock: being written now (held) unless it is old (stale)."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if age < _UNREADABLE_GRACE_S:
            raise LockedError(
                f"{self.output} is being locked by another animecli run right now; rerun in a moment "
                f"(if this persists, delete {self.path})"
            )
        self._take_over(text)

    def _create(self) -> bool:
        """Create the lock file with our PID; ``False`` if it already exists."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OutputError(
                f"cannot write to the output folder {self.output} ({exc.strerror or exc}); "
                "make it writable (chmod u+w) or choose another OUTPUT"
            ) from None
        try:
            os.write(fd, self._me.to_line().encode())
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise OutputError(
                f"cannot write the lock file {self.path} ({exc.strerror or exc}); "
                "free some space or choose another OUTPUT"
            ) from None
        os.close(fd)
        return True

    def _take_over(self, stale_text: str) -> bool:
        """Move a stale lock aside; ``True`` if it was the one we judged stale."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{self._me.pid}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # someone else moved it first
        except OSError as exc:
            raise OutputError(
                f"cannot replace the stale lock {self.path} ({exc.strerror or exc}); delete it by hand"
            ) from None
        if _read(aside) == stale_text:
            with contextlib.suppress(OSError):
                os.unlink(aside)
            return True
        # We moved a fresh lock of a run that took over first: put it back (unless yet another run
        # has locked meanwhile, in which case that one wins and the moved file is dropped).
        with contextlib.suppress(OSError):
            os.link(aside, self.path)
        with contextlib.suppress(OSError):
            os.unlink(aside)
        return False

    def release(self) -> None:
        """Remove the lock file if it is still ours. Safe to call twice."""
        if not self._held:
            return
        self._held = False
        if Holder.parse(_read(self.path)) == self._me:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.output.rmdir()  # only succeeds when empty (nothing was converted)

