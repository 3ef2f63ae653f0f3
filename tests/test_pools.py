"""Decode and encode thread pools: order, bounded memory, errors, and --jobs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import animecli.io.loader as loader_mod
from animecli.errors import FileError
from animecli.io.discovery import Job
from animecli.io.loader import Loaded, StreamingLoader
from animecli.io.writer import Saved, WriterPool
from animecli.options import LoadOptions, WriteOptions
from tests.conftest import cli_convert, make_photo

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


def _jobs(tmp_path: Path, count: int) -> list[Job]:
    return [Job(make_photo(tmp_path / f"p{i:02d}.png", (24 + i, 20), seed=i), tmp_path / "out" / f"p{i:02d}.png")
            for i in range(count)]


def test_parallel_decoding_keeps_order_and_passes_other_items_through(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs(tmp_path, 12)
    real = loader_mod.load_one
    threads: set[str] = set()

    def slow_load(job: Job, opts: LoadOptions) -> Loaded:
        threads.add(threading.current_thread().name)
        # Early files take longest, so a loader that yields in completion order would reorder them.
        time.sleep(0.02 * (12 - int(job.src.stem[1:])) / 12)
        return real(job, opts)

    monkeypatch.setattr(loader_mod, "load_one", slow_load)
    items: list[object] = [*jobs[:5], "marker", *jobs[5:]]
    with StreamingLoader(items, LoadOptions(prefetch=2, workers=4)) as stream:
        got = list(stream)
    assert got[5] == "marker"
    loaded = [g for g in got if isinstance(g, Loaded)]
    assert [g.job for g in loaded] == jobs
    assert all(g.error is None and g.processed_size == (24 + i, 20) for i, g in enumerate(loaded))
    assert len(threads) > 1  # really decoded on several threads


def test_decoded_images_ahead_of_the_consumer_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs(tmp_path, 20)
    real = loader_mod.load_one
    lock = threading.Lock()
    decoded = [0]

    def counting_load(job: Job, opts: LoadOptions) -> Loaded:
        out = real(job, opts)
        with lock:
            decoded[0] += 1
        return out

    monkeypatch.setattr(loader_mod, "load_one", counting_load)
    ahead: list[int] = []
    consumed = 0
    with StreamingLoader(jobs, LoadOptions(prefetch=2, workers=3)) as stream:
        for _ in stream:
            consumed += 1
            time.sleep(0.02)  # a slow model: the loader runs ahead as far as it may
            with lock:
                ahead.append(decoded[0] - consumed)
    assert consumed == 20
    assert max(ahead) <= max(2, 3) + 1
    assert max(ahead) >= 2  # it did run ahead


def test_closing_early_stops_the_threads(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 30)
    before = threading.active_count()
    stream = StreamingLoader(jobs, LoadOptions(prefetch=2, workers=3))
    first = next(iter(stream))
    stream.close()
    assert isinstance(first, Loaded) and first.job == jobs[0]
    time.sleep(0.1)
    assert threading.active_count() <= before


def test_writer_pool_returns_outcomes_in_submission_order(tmp_path: Path) -> None:
    pool: WriterPool[int] = WriterPool(workers=3, depth=4)
    opts = WriteOptions()
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    for i in range(10):
        if i == 4:
            pool.passthrough(i)  # nothing to write: stays in its place
        dest = blocker / "x.png" if i == 7 else tmp_path / "out" / f"{i}.png"
        pool.submit(i if i != 4 else 40, rgb, dest, opts)
    outcomes = pool.finished(wait=True)
    pool.close()
    assert [tag for tag, _ in outcomes] == [0, 1, 2, 3, 4, 40, 5, 6, 7, 8, 9]
    by_tag = dict(outcomes)
    assert by_tag[4] is None
    assert isinstance(by_tag[7], FileError) and "x.png" in str(by_tag[7])
    for tag in (0, 3, 40, 9):
        assert isinstance(by_tag[tag], Saved)
    with Image.open(tmp_path / "out" / "9.png") as im:
        assert np.array_equal(np.asarray(im), rgb)


def test_writer_pool_bounds_results_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import animecli.io.writer as writer_mod

    gate = threading.Event()
    running = [0]
    peak = [0]
    lock = threading.Lock()
    real = writer_mod.save_image

    def gated_save(*args: object, **kwargs: object) -> Saved:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(5)
        with lock:
            running[0] -= 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_mod, "save_image", gated_save)
    pool: WriterPool[int] = WriterPool(workers=2, depth=3)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    for i in range(3):
        pool.submit(i, rgb, tmp_path / f"{i}.png", WriteOptions())
    submitted = threading.Event()

    def fourth() -> None:
        pool.submit(3, rgb, tmp_path / "3.png", WriteOptions())
        submitted.set()

    t = threading.Thread(target=fourth)
    t.start()
    assert not submitted.wait(0.3)  # depth reached: the fourth result waits for the oldest
    gate.set()
    t.join(5)
    assert submitted.is_set()
    assert [tag for tag, _ in pool.finished(wait=True)] == [0, 1, 2, 3]
    pool.close()
    assert peak[0] <= 2


def test_synchronous_writer_pool(tmp_path: Path) -> None:
    pool: WriterPool[str] = WriterPool(workers=0)
    pool.submit("a", np.zeros((8, 8, 3), dtype=np.uint8), tmp_path / "a.png", WriteOptions())
    assert (tmp_path / "a.png").is_file()  # written before submit returned
    pool.passthrough("b")
    assert [(t, type(o).__name__) for t, o in pool.finished()] == [("a", "Saved"), ("b", "NoneType")]


def test_jobs_option_gives_identical_outputs_and_ordered_reports(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(9):
        make_photo(src / f"f{i}.jpg", (48 + 4 * (i % 3), 40), seed=i)
    (src / "f4.jpg").write_text("not an image")
    outs = {}
    for jobs in ("1:0", "3:2", "2"):
        out = tmp_path / f"out_{jobs.replace(':', '_')}"
        report = tmp_path / f"r_{jobs.replace(':', '_')}.json"
        r = cli_convert(src, out, "--jobs", jobs, "--report", report)
        assert r.exit_code == 1, r.output  # the broken file
        rows = json.loads(report.read_text())["files"]
        assert [Path(row["src"]).name for row in rows] == [f"f{i}.jpg" for i in range(9)]
        assert [row["status"] for row in rows].count("converted") == 8
        outs[jobs] = {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.jpg"))}
    assert outs["1:0"].keys() == outs["3:2"].keys() == outs["2"].keys() and len(outs["1:0"]) == 8
    for name, ref in outs["1:0"].items():
        assert np.array_equal(outs["3:2"][name], ref) and np.array_equal(outs["2"][name], ref)


@pytest.mark.parametrize("value", ["0", "0:1", "2:-1", "x", "1:2:3"])
def test_bad_jobs_values_are_usage_errors(tmp_path: Path, value: str) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--jobs", value)
    assert r.exit_code == 2 and "--jobs" in r.output
    assert not (tmp_path / "out" / "a.png").exists()


def test_compile_refuses_other_backends(tmp_path: Path) -> None:
    make_photo(tmp_path / "in" / "a.png")
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--compile", "--backend", "traced")
    assert r.exit_code == 2 and "--compile" in r.output


def test_a_compile_failure_stops_the_run_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo.exc as dynamo_exc

    def broken_compile(model: object, **kwargs: object) -> object:
        def run(x: torch.Tensor) -> torch.Tensor:
            raise dynamo_exc.TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    for i in range(3):
        make_photo(tmp_path / "in" / f"a{i}.png", seed=i)
    r = cli_convert(tmp_path / "in", tmp_path / "out", "--compile")
    assert r.exit_code == 2, r.output
    assert "C++ compiler" in r.output and "drop --compile" in r.output
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.slow
def test_compiled_model_gives_the_eager_output(tmp_path: Path) -> None:
    import shutil

    if not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    for i in range(2):
        make_photo(tmp_path / "in" / f"a{i}.png", (64, 48), seed=i)
    r = cli_convert(tmp_path / "in", tmp_path / "eager", "--backend", "eager")
    assert r.exit_code == 0, r.output
    r = cli_convert(tmp_path / "in", tmp_path / "compiled", "--compile", "--report", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["backend"] == "eager"
    for i in range(2):
        a = np.asarray(Image.open(tmp_path / "eager" / f"a{i}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "compiled" / f"a{i}.png")).astype(int)
        assert np.abs(a - b).max() <= 1  # fused kernels round differently, never by more than a level
