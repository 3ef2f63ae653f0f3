"""animecli watch (issue 25): readiness of files being copied in, and the loop end to end."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from animecli.options import ConvertOptions, EngineOptions
from animecli.run.watch import Readiness, WatchOptions, run_watch
from tests.conftest import make_photo, read_report

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_growing_file_waits_until_it_stops(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    clock = Clock()
    r = Readiness((str(inbox),), True, False, 2.0, tmp_path / "out", clock=clock, wall=clock)
    f = inbox / "a.jpg"
    f.write_bytes(b"x" * 10)
    os.utime(f, (clock.t, clock.t))  # just written
    assert r.poll() == (set(), 1)
    clock.t += 1.5
    f.write_bytes(b"x" * 20)  # still growing
    os.utime(f, (clock.t, clock.t))
    assert r.poll() == (set(), 1)
    clock.t += 1.5
    assert r.poll() == (set(), 1)  # unchanged for 1.5 s < 2 s
    clock.t += 1.0
    ready, _ = r.poll()
    assert ready == {os.path.realpath(f)}
    r.handled(ready)
    clock.t += 5
    assert r.poll() == (set(), 0)  # converted in this state: not again
    f.write_bytes(b"y" * 20)
    os.utime(f, (clock.t, clock.t))
    assert r.poll() == (set(), 1)  # the change is seen
    clock.t += 3
    assert r.poll()[0] == {os.path.realpath(f)}  # … and it settled: again
    (inbox / "notes.txt").write_text("not an image")
    (inbox / ".hidden.jpg").write_bytes(b"x")
    clock.t += 10
    assert r.poll()[0] == {os.path.realpath(f)}  # the rest is not watched


def test_old_files_are_ready_at_once(tmp_path: Path) -> None:
    f = tmp_path / "in" / "old.png"
    make_photo(f)
    os.utime(f, (time.time() - 60, time.time() - 60))
    r = Readiness((str(tmp_path / "in"),), True, False, 2.0, tmp_path / "out")
    assert r.poll()[0] == {os.path.realpath(f)}


def _slow_copy(src: Path, dst: Path, chunks: int = 4, pause: float = 0.4) -> None:
    data = src.read_bytes()
    step = -(-len(data) // chunks)
    with dst.open("wb") as fh:
        for k in range(0, len(data), step):
            fh.write(data[k : k + step])
            fh.flush()
            time.sleep(pause)


@pytest.mark.parametrize("events", [False, True])
def test_watch_converts_existing_then_slowly_copied_files(tmp_path: Path, events: bool) -> None:
    if events:
        pytest.importorskip("watchdog")
    inbox, out = tmp_path / "in", tmp_path / "out"
    make_photo(inbox / "first.png")
    old = time.time() - 60
    os.utime(inbox / "first.png", (old, old))
    make_photo(tmp_path / "later.png", size=(48, 36), seed=3)
    stop = threading.Event()
    records: list[str] = []
    opts = ConvertOptions((str(inbox),), out, engine=EngineOptions(device="cpu"), report=tmp_path / "r.json")
    result = {}

    def run() -> None:
        result["s"] = run_watch(opts, WatchOptions(settle=0.6, interval=0.1, events=events), stop,
                                on_record=lambda rec: records.append(f"{rec.status.value} {Path(rec.src).name}"))

    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.time() + 60
        while not (out / "first.png").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (out / "first.png").exists()
        # Copied in slowly: it must not be converted while incomplete (a truncated PNG would fail).
        _slow_copy(tmp_path / "later.png", inbox / "later.png")
        while not (out / "later.png").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (out / "later.png").exists()
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    assert records == ["converted first.png", "converted later.png"]
    s = result["s"]
    assert s.converted == 2 and s.failed == 0 and s.interrupted
    report = read_report(tmp_path / "r.json")
    assert [Path(r["src"]).name for r in report["files"]] == ["first.png", "later.png"]
    assert not (out / ".animecli.lock").exists()  # released between rounds and at the end


def test_watch_loads_the_model_once_for_all_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import animecli.inference.select as select

    calls: list[object] = []
    real = select.select_engine

    def counting(model: object, opts: EngineOptions, **kw: object) -> select.Selected:
        calls.append(model)
        return real(model, opts, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(select, "select_engine", counting)
    inbox, out = tmp_path / "in", tmp_path / "out"
    make_photo(inbox / "a.png")
    old = time.time() - 60
    os.utime(inbox / "a.png", (old, old))
    stop = threading.Event()
    opts = ConvertOptions((str(inbox),), out, engine=EngineOptions(device="cpu"))
    rounds: list[int] = []
    t = threading.Thread(target=lambda: run_watch(opts, WatchOptions(settle=0.2, interval=0.05, events=False), stop,
                                                  on_round=lambda n, _s: rounds.append(n)))
    t.start()
    try:
        deadline = time.time() + 60
        while len(rounds) < 1 and time.time() < deadline:
            time.sleep(0.05)
        make_photo(inbox / "b.png", seed=2)
        os.utime(inbox / "b.png", (old, old))
        while len(rounds) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=60)
    assert rounds == [1, 1] and (out / "a.png").exists() and (out / "b.png").exists()
    assert len(calls) == 1  # two rounds, one model load


def test_the_engine_cache_builds_again_when_the_options_change(tmp_path: Path) -> None:
    from animecli.inference.select import EngineCache
    from animecli.options import ModelChoice

    cache = EngineCache()
    one = cache.get(ModelChoice(), EngineOptions(device="cpu", threads=1))
    assert cache.get(ModelChoice(), EngineOptions(device="cpu", threads=1)) is one
    other = cache.get(ModelChoice(), EngineOptions(device="cpu", threads=2))
    assert other is not one and other.name == one.name


def test_watch_command_parses_convert_options_and_refuses_bad_ones(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from animecli.cli.app import app

    inbox = tmp_path / "in"
    make_photo(inbox / "a.png")
    runner = CliRunner()
    bad = runner.invoke(app, ["watch", str(inbox), str(tmp_path / "out"), "--no-such-option"])
    assert bad.exit_code == 2 and "no-such-option" in bad.output, bad.output
    dry = runner.invoke(app, ["watch", str(inbox), str(tmp_path / "out"), "--dry-run"])
    assert dry.exit_code == 2 and "--dry-run" in dry.output, dry.output
    preset = runner.invoke(app, ["watch", str(inbox), str(tmp_path / "out"), "--preset", "warp"])
    assert preset.exit_code == 2 and "--preset" in preset.output, preset.output
    assert not (tmp_path / "out").exists()  # refused before anything was written
