"""Issue 27, item 3: SIGINT/SIGTERM while ``animecli`` is still starting up.

A signal before ``convert`` has its own handlers (while Typer, rich, the CLI and the pipeline
are imported, and options parsed) exits 130/143 with no traceback and, with ``--report``,
writes an empty report marked interrupted. The signal is sent from an import hook at a
chosen moment of start-up, so the tests do not depend on the machine's speed; one test
sends it from outside, as soon as the process catches SIGTERM (Linux /proc).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from animecli.atomic import TEMP_SUFFIX
from animecli.run.lock import LOCK_NAME
from tests.conftest import make_photo

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}

# Sends the signals to itself when `target` is first imported, then runs the console-script entry point.
HOOK = """
import builtins, os, sys
real, fired = builtins.__import__, []
def hook(name, *args, **kwargs):
    if name == {target!r} and not fired:
        fired.append(name)
        for s in {signals!r}:
            os.kill(os.getpid(), s)
    return real(name, *args, **kwargs)
builtins.__import__ = hook
sys.argv = ["animecli", *{argv!r}]
from animecli.__main__ import main
main()
"""


def run_hooked(target: str, signals: list[int], argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = HOOK.format(target=target, signals=[int(s) for s in signals], argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def photos(folder: Path, n: int = 3) -> Path:
    for i in range(n):
        make_photo(folder / f"p{i}.png", (64, 48), seed=i)
    return folder


def assert_empty_interrupted_report(report: Path) -> None:
    data = json.loads(report.read_text())
    assert "old" not in data  # this run's report, not the one left at the path
    assert data["summary"]["interrupted"] is True
    assert data["summary"]["converted"] == 0 and data["files"] == []
    assert not list(report.parent.glob(f"*{TEMP_SUFFIX}"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("target", ["typer", "animecli.cli.app", "animecli.run.convert"])
def test_signal_while_starting_gives_its_exit_code_and_an_empty_report(
    tiny_weights_dir: Path, tmp_path: Path, target: str, signum: int
) -> None:
    src, out, report = photos(tmp_path / "in"), tmp_path / "out", tmp_path / "r.json"
    report.write_text('{"old": true}')
    r = run_hooked(target, [signum], ["convert", str(src), str(out), "--report", str(report), "--device", "cpu"])
    assert r.returncode == CODE[signum], r.stderr
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr
    assert f"interrupted by {signal.Signals(signum).name}" in r.stderr
    assert_empty_interrupted_report(report)
    assert not list(out.glob("*.png")) and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("argv", [["--help"], ["convert", "--help"], ["models", "list"], ["convert", "--bogus"]],
                         ids=["help", "convert-help", "models-list", "option-error"])
def test_signal_while_starting_other_commands_exit_143(tiny_weights_dir: Path, argv: list[str]) -> None:
    r = run_hooked("animecli.cli.app", [signal.SIGTERM], argv)
    assert r.returncode == 143, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert "interrupted by SIGTERM" in r.stderr


def test_a_second_signal_while_starting_aborts_with_its_own_code(tiny_weights_dir: Path, tmp_path: Path) -> None:
    src, out = photos(tmp_path / "in"), tmp_path / "out"
    r = run_hooked("typer", [signal.SIGTERM, signal.SIGINT], ["convert", str(src), str(out), "--device", "cpu"])
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().endswith("aborted") and "Traceback" not in r.stderr, r.stderr


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (signum - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_as_soon_as_it_is_caught_gives_143_and_an_empty_report(tiny_weights_dir: Path, tmp_path: Path) -> None:
    """From outside, as cron or systemd would: SIGTERM the moment the process first catches it.
    Before the fix nothing caught it until convert's own handlers (after the options, with the
    model about to load), and that run went on to convert an image."""
    src, out, report = photos(tmp_path / "in", 6), tmp_path / "out", tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "animecli", "convert", str(src), str(out), "--report", str(report), "--device", "cpu",
         "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not _catches(proc.pid, signal.SIGTERM):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert_empty_interrupted_report(report)
