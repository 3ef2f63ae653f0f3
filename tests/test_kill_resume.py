"""SIGKILL at random points, then a rerun: complete, valid outputs, no temp files, no lock (issue 7).

A small version of ``bench/kill_resume.py`` (3 kills on 10 images); the
benchmark itself does 20 kills on 60 images.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.slow,  # ~15 s: four interpreter start-ups with torch
]

BENCH = Path(__file__).resolve().parents[1] / "bench" / "kill_resume.py"


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("kill_resume_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_sigkill_then_rerun_completes(tmp_path: Path) -> None:
    bench = _bench()
    # full_time fixed (no calibration run) to keep the test short; kills fall between 0.3 and 4 s.
    res = bench.run_bench(tmp_path / "work", kills=3, images=10, seed=0, full_time=4.0, log=lambda m: None)

    assert res.problems == [], bench.tables(res)
    assert res.kills >= 1  # the first delay (~0.8 s) is shorter than any complete run
    assert res.final_rc == 0
    assert res.final_summary["failed"] == 0
    assert res.final_summary["converted"] + res.final_summary["skipped"] == 10
    assert not res.missing and not res.invalid and not res.leftover_temp
    assert not res.lock_after_final
