"""The output-folder lock: one run at a time, stale locks taken over, always released."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from animecli.errors import LockedError
from animecli.run.lock import LOCK_NAME, Holder, OutputLock, is_alive, me
from tests.conftest import cli_convert as convert
from tests.conftest import make_photo

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder: Path, holder: Holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(holder.to_line())
    return path


def test_live_lock_exits_3_naming_pid_and_file(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png")
    lock = write_lock(out, me())
    t0 = time.perf_counter()
    r = convert(src, out)
    assert r.exit_code == 3, r.output
    assert time.perf_counter() - t0 < 5
    msg = " ".join(r.stderr.split())
    assert f"PID {os.getpid()}" in msg and str(lock) in msg.replace("\n", "")
    assert "wait for it" in msg
    assert lock.read_text() == me().to_line()  # untouched
    assert not (out / "a.png").exists()


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png")
    code = (
        "import sys, time; from pathlib import Path; from animecli.run.lock import OutputLock\n"
        "with OutputLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = convert(src, out)
        assert r.exit_code == 3, r.output
        assert f"PID {holder.pid}" in r.stderr
    finally:
        holder.terminate()
        holder.wait()


def test_stale_lock_of_dead_process_is_taken_over_and_released(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png")
    write_lock(out, Holder(dead_pid(), me().host, 0.0))
    r = convert(src, out)
    assert r.exit_code == 0, r.output
    assert (out / "a.png").is_file()
    assert not (out / LOCK_NAME).exists()


def test_reused_pid_counts_as_stale() -> None:
    assert is_alive(me())
    assert not is_alive(Holder(os.getpid(), me().host, me().started - 1000))
    assert not is_alive(Holder(dead_pid(), me().host))


def test_lock_from_another_host_is_never_taken_over(tmp_path: Path) -> None:
    lock = write_lock(tmp_path, Holder(dead_pid(), "some-other-host", 0.0))
    with pytest.raises(LockedError, match="some-other-host") as info:
        OutputLock(tmp_path).acquire()
    assert str(lock) in str(info.value)
    assert lock.exists()


def test_garbled_lock_is_held_while_fresh_and_stale_when_old(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_NAME
    lock.write_text("")
    with pytest.raises(LockedError, match="right now"):
        OutputLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with OutputLock(tmp_path) as held:
        assert Holder.parse(lock.read_text()) == me()
        assert held.took_over is None
    assert not lock.exists()


def test_released_on_exception_and_empty_new_folder_removed(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt), OutputLock(out):
        assert (out / LOCK_NAME).exists()
        raise KeyboardInterrupt
    assert not out.exists()
    tmp_path.joinpath("kept").mkdir()
    with OutputLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()


def test_take_over_puts_back_a_lock_another_run_just_took(tmp_path: Path) -> None:
    stale = Holder(dead_pid(), me().host).to_line()
    fresh = Holder(os.getpid(), me().host, me().started).to_line()
    (tmp_path / LOCK_NAME).write_text(fresh)  # another run replaced the stale lock first
    lock = OutputLock(tmp_path)
    assert not lock._take_over(stale)
    assert (tmp_path / LOCK_NAME).read_text() == fresh
    assert not list(tmp_path.glob(LOCK_NAME + ".stale-*"))


def test_release_leaves_a_lock_that_is_not_ours(tmp_path: Path) -> None:
    with OutputLock(tmp_path):
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "x"}))
    assert (tmp_path / LOCK_NAME).exists()


def test_dry_run_takes_no_lock(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "a.png")
    write_lock(out, me())
    r = convert(src, out, "--dry-run")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("content", [
    '{"pid": 0, "host": "%s", "started": 1700000000}',  # "kill 0" would signal the user's own group
    '{"pid": -1, "host": "%s", "started": 1700000000}',
    '{"pid": 1, "host": "%s", "started": NaN}',  # time.localtime(nan) raised ValueError
    '{"pid": 1, "host": "%s", "started": 1e400}',  # inf: OverflowError
    '{"pid": 1, "host": "%s", "started": -5}',
])
def test_a_lock_naming_no_real_process_is_garbled_not_held(tmp_path: Path, content: str) -> None:
    lock = tmp_path / LOCK_NAME
    lock.write_text(content % me().host)
    assert Holder.parse(lock.read_text()) is None
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with OutputLock(tmp_path) as held:  # an old garbled lock is stale: taken over
        assert Holder.parse(lock.read_text()) == me()
        assert held.took_over is None


def test_a_start_time_too_far_out_to_show_is_left_out_of_the_message() -> None:
    assert Holder(123, "h", 1e300).describe() == "PID 123 on h"
    assert Holder(123, "h", 0.0).describe() == "PID 123 on h"
    assert Holder(123, "h", 1700000000.0).describe().startswith("PID 123 on h, running since 20")


def test_a_folder_where_the_lock_goes_is_a_one_line_error(tmp_path: Path) -> None:
    photos, out = tmp_path / "p", tmp_path / "o"
    make_photo(photos / "a.png", seed=1)
    (out / LOCK_NAME).mkdir(parents=True)
    r = convert(photos, out)
    assert r.exit_code == 2, r.output
    assert "is a folder" in r.output and "Traceback" not in r.output
    assert not (out / "a.png").exists()
