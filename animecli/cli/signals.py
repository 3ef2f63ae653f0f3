"""SIGINT/SIGTERM during a run: the first asks for a clean stop, the second aborts."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass
from animecli.cli import startup
from animecli.cli.console import err

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Abort(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop now, with the exit code of the signal that asked."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    """First SIGINT/SIGTERM: finish the current batch, write the report, exit 130/143. Second: stop now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise Abort(signum)
        self.received = signum
        self.stop.set()
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send SIGTERM again"
        err.print(f"\n{signal.Signals(signum).name}: finishing the current image, then stopping "
                  f"({again} to abort now)")

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_SIGNAL:
                self._old[s] = signal.signal(s, self._handle)
            early = startup.take()  # received while starting up (animecli/cli/startup.py)
            if early is not None:
                self.received = early
                self.stop.set()
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]

