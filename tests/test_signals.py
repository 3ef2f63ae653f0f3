"""SIGTERM / SIGINT on a real ``python -m animecli convert`` process (what cron and systemd send).

The run must finish the image in hand, write its report, leave no temporary
files and no lock, and exit 143 (SIGTERM) or 130 (SIGINT); a rerun resumes.
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
from PIL import Image
from typer.testing import CliRunner

from animecli.atomic import TEMP_SUFFIX
from animecli.cli.app import app
from animecli.run.lock import LOCK_NAME
from animecli.run.resume import STATE_NAME
from tests.conftest import make_photo

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

N_IMAGES = 20


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.png"))


def start(src: Path, out: Path, report: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "animecli", "convert", str(src), str(out), "--device", "cpu", "--threads", "1",
           "--batch-size", "1", "--prefetch", "1", "--report", str(report), "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def interrupt_after_first_output(proc: subprocess.Popen[str], out: Path, signum: int) -> tuple[str, str]:
    deadline = time.monotonic() + 60
    while not outputs(out):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output appeared within 60 s"
        time.sleep(0.01)
    proc.send_signal(signum)
    return proc.communicate(timeout=60)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_rerun_resumes(
    tiny_weights_dir: Path, tmp_path: Path, signum: int, code: int
) -> None:
    src, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    for i in range(N_IMAGES):
        make_photo(src / f"p{i:02d}.png", (128, 96), seed=i)
    proc = start(src, out, report)
    _, stderr = interrupt_after_first_output(proc, out, signum)

    assert proc.returncode == code, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    data = json.loads(report.read_text())
    assert data["summary"]["interrupted"] is True
    done = outputs(out)
    assert 1 <= data["summary"]["converted"] == len(done) < N_IMAGES
    for path in done:
        with Image.open(path) as img:
            img.load()
            assert img.size == (128, 96)
    assert not list(out.glob(f"*{TEMP_SUFFIX}"))
    assert not (out / LOCK_NAME).exists()
    recorded = {json.loads(line)["dst"] for line in (out / STATE_NAME).read_text().splitlines()}
    assert recorded == {p.name for p in done}

    # A rerun resumes: it would convert exactly the images not done yet (checked with --dry-run, in-process).
    r = CliRunner().invoke(app, ["convert", str(src), str(out), "--dry-run", "--report", str(tmp_path / "plan.json")])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "plan.json").read_text())["files"]
    assert sorted(Path(row["dst"]).name for row in rows if row["status"] == "skipped") == [p.name for p in done]
    assert sum(row["status"] == "planned" for row in rows) == N_IMAGES - len(done)


def test_ctrl_c_while_the_cli_imports_is_exit_130_without_a_traceback() -> None:
    # A Ctrl-C that lands while the command is still importing Typer and rich (its first ~0.1 s):
    # simulated by an import hook that raises KeyboardInterrupt when the CLI module is imported.
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def hook(name, *args, **kwargs):\n"
        "    if name == 'animecli.cli':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hook\n"
        "sys.argv = ['animecli', '--help']\n"
        "from animecli.__main__ import main\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, r.stderr
    assert r.stderr == "aborted\n"


def test_a_second_sigterm_aborts_with_143(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first signal asks for a clean stop; a second aborts at once, with its own exit code
    (a double SIGTERM from a supervisor is not a Ctrl-C: 143, not 130)."""
    from animecli.cli import app as cli
    from animecli.cli.signals import Signals

    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        sig = Signals()
        sig._handle(signum, None)
        assert sig.stop.is_set() and sig.received == signum
        with pytest.raises(KeyboardInterrupt) as info:
            sig._handle(signum, None)

        def app(exc: BaseException = info.value) -> None:
            raise exc

        monkeypatch.setattr(cli, "app", app)
        with pytest.raises(SystemExit) as done:
            cli.run()
        assert done.value.code == code


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_during_a_run_exits_with_its_own_code_through_typer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signum: int, code: int
) -> None:
    """The whole command line, Typer included: Typer turns any KeyboardInterrupt (our Abort is
    one) into exit 130 and prints nothing, so a supervisor's double SIGTERM read as a Ctrl-C."""
    import animecli.run.convert

    def run_convert(*args: object) -> None:
        os.kill(os.getpid(), signum)  # first: a clean stop is asked for
        os.kill(os.getpid(), signum)  # second: abort now (raised from the handler, here)
        pytest.fail("the second signal did not abort")

    monkeypatch.setattr(animecli.run.convert, "run_convert", run_convert)
    src = tmp_path / "in"
    make_photo(src / "p.png", seed=0)
    r = CliRunner().invoke(app, ["convert", str(src), str(tmp_path / "out"), "--device", "cpu"])
    assert r.exit_code == code, (r.exit_code, r.output)
    assert r.stderr.strip().endswith("aborted"), r.stderr


def test_an_abort_still_writes_the_report_of_what_was_done(tmp_path: Path, tiny_weights_dir: Path) -> None:
    """A second signal aborts mid-run (KeyboardInterrupt): the report is this run's, marked
    interrupted, not the previous run's file left in place."""
    from animecli.options import ConvertOptions, EngineOptions
    from animecli.run.convert import run_convert

    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    for i in range(6):
        make_photo(src / f"p{i}.png", seed=i)
    rep.write_text('{"old": true}')
    seen: list[str] = []

    def on_record(rec: object) -> None:
        seen.append(str(rec))
        if len(seen) == 2:
            raise KeyboardInterrupt

    opts = ConvertOptions(inputs=(str(src),), output=out, engine=EngineOptions(device="cpu", threads=1), report=rep)
    with pytest.raises(KeyboardInterrupt):
        run_convert(opts, on_record)
    report = json.loads(rep.read_text())
    assert "old" not in report and report["summary"]["interrupted"] is True
    assert 2 <= len(report["files"]) < 6
    assert not (out / LOCK_NAME).exists()
