"""``--engine ray``: same outputs (byte for byte), report, resume and exit codes as the local engine.

The Ray tests start one local Ray instance (2 CPUs, no dashboard) for the module and skip when Ray
is not installed (``pip install -e '.[ray]'``); the missing-Ray and pool-sizing tests always run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from animecli.errors import SetupError, UsageError
from animecli.options import ConvertOptions, EngineKind, EngineOptions, ModelChoice, RayOptions
from animecli.run.ray import INSTALL_HINT, plan_pool
from animecli.run.report import FileRecord
from tests.conftest import ROOT, cli_convert, files_under, make_photo, read_report, report_rows

STABLE = ["src", "status", "reason", "input_size", "processed_size", "notes"]


pytestmark = [
    # Ray Data reads its own deprecated settings when it copies its context: not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    # Every test here runs against the tiny seeded models of conftest, never the shipped ones.
    pytest.mark.usefixtures("tiny_weights_dir"),
]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """One local Ray instance for the module (the engine reuses a running one and leaves it running)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def convert(*args: object) -> Result:
    return cli_convert(*args, "--threads", "1")


def outputs(folder: Path) -> dict[str, bytes]:
    """The files below ``folder`` (as files_under names them) and their bytes."""
    return {name: (folder / name).read_bytes() for name in sorted(files_under(folder))}


def _photos(src: Path) -> None:
    for i in range(5):
        make_photo(src / f"p{i}.png", (40 + 3 * i, 30), seed=i)
    make_photo(src / "sub" / "q.jpg", (24, 36), seed=7, quality=90)
    make_photo(src / "sub" / "c.png", (24, 36), seed=8)
    make_photo(src / "sub" / "c.gif", (20, 20), seed=10)  # GIF is written as PNG: c_gif.png / c_png.png
    make_photo(src / "sub" / "w.webp", (33, 21), seed=9)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")


@pytest.mark.slow  # Ray tests: ~65 s in all on 2 busy cores (Ray start, actors importing torch)
def test_ray_matches_local_and_resumes(ray_instance: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    _photos(src)
    local, dist = tmp_path / "local", tmp_path / "ray"
    r_local = convert(src, local, "--report", tmp_path / "local.json")
    r_ray = convert(src, dist, "--engine", "ray", "--workers", "2", "--report", tmp_path / "ray.json")
    assert r_local.exit_code == 1, r_local.output
    assert r_ray.exit_code == 1, r_ray.output  # broken files fail, exactly as locally
    assert "FAILED" in r_ray.stderr and "broken.jpg" in r_ray.stderr and "empty.png" in r_ray.stderr

    # byte-identical outputs, same names (collisions included)
    got, want = outputs(dist), outputs(local)
    assert set(got) == set(want) == {"p0.png", "p1.png", "p2.png", "p3.png", "p4.png", "sub/q.jpg",
                                     "sub/c_gif.png", "sub/c_png.png", "sub/w.webp"}
    assert all(got[name] == want[name] for name in want)

    # the same report rows, in the same order; the same counts
    rl, rr = read_report(tmp_path / "local.json"), read_report(tmp_path / "ray.json")
    assert [[row[k] for k in STABLE] for row in rr["files"]] == [[row[k] for k in STABLE] for row in rl["files"]]
    assert [Path(row["dst"]).relative_to(dist) if row["dst"] else "" for row in rr["files"]] == \
        [Path(row["dst"]).relative_to(local) if row["dst"] else "" for row in rl["files"]]
    for key in ("converted", "skipped", "failed", "ignored_non_images", "model", "precision", "backend"):
        assert rr["summary"][key] == rl["summary"][key], key
    assert (rr["summary"]["converted"], rr["summary"]["failed"]) == (9, 2)
    assert rr["summary"]["device"] == "ray: 2 × cpu"
    # The header, printed before any actor ran, names the backend the report records.
    assert f"on ray: 2 × cpu (float32, {rr['summary']['backend']})" in r_ray.stdout, r_ray.stdout
    converted = [row for row in rr["files"] if row["status"] == "converted"]
    assert all(row["load_ms"] > 0 and row["infer_ms"] > 0 and row["save_ms"] > 0 for row in converted)

    # rerun: up-to-date outputs are skipped on the driver, nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in dist.rglob("*") if p.is_file() and not p.name.startswith(".")}
    r = convert(src, dist, "--engine", "ray", "--report", tmp_path / "again.json")
    assert r.exit_code == 1, r.output
    again = read_report(tmp_path / "again.json")["summary"]
    assert (again["converted"], again["skipped"], again["failed"]) == (0, 9, 2)
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}

    # the resume state is shared with the local engine: a local rerun of the Ray output skips too
    r = convert(src, dist, "--report", tmp_path / "local_again.json")
    assert read_report(tmp_path / "local_again.json")["summary"]["skipped"] == 9

    # a changed input is redone, the rest skipped
    make_photo(src / "p1.png", (40, 30), seed=99)
    r = convert(src, dist, "--engine", "ray", "--report", tmp_path / "changed.json")
    rows = report_rows(tmp_path / "changed.json")
    assert rows["p1.png"]["status"] == "converted" and "input changed" in rows["p1.png"]["notes"]
    assert rows["p0.png"]["status"] == "skipped"


@pytest.mark.slow  # Ray tests: ~65 s in all on 2 busy cores (Ray start, actors importing torch)
def test_ray_all_good_exits_0_and_csv_report(ray_instance: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(3):
        make_photo(src / f"a{i}.png", (20, 16), seed=i)
    r = convert(src, tmp_path / "out", "--engine", "ray", "--report", tmp_path / "r.csv", "--format", "jpg")
    assert r.exit_code == 0, r.output
    assert sorted(outputs(tmp_path / "out")) == ["a0.jpg", "a1.jpg", "a2.jpg"]
    lines = (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and all(",converted," in line for line in lines[1:])


@pytest.mark.slow  # Ray tests: ~65 s in all on 2 busy cores (Ray start, actors importing torch)
def test_ray_stop_finishes_with_a_report_and_rerun_completes(ray_instance: Any, tmp_path: Path) -> None:
    from animecli.run.convert import run_convert

    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        make_photo(src / f"s{i}.png", (20, 16), seed=i)
    stop = threading.Event()
    seen: list[FileRecord] = []

    def on_record(rec: FileRecord) -> None:
        seen.append(rec)
        stop.set()  # as SIGINT would, after the first image

    opts = ConvertOptions((str(src),), out, engine=EngineOptions(device="cpu", threads=1),
                          report=tmp_path / "r.json", engine_kind=EngineKind.RAY, ray=RayOptions(workers=1))
    summary = run_convert(opts, on_record=on_record, stop=stop)
    assert summary.interrupted and summary.converted == 1 and len(seen) == 1
    assert read_report(tmp_path / "r.json")["summary"]["interrupted"] is True
    r = convert(src, out, "--engine", "ray")
    assert r.exit_code == 0, r.output
    assert sorted(outputs(out)) == [f"s{i}.png" for i in range(6)]


def test_missing_ray_is_a_setup_error_with_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    make_photo(tmp_path / "in" / "a.png")
    r = convert(tmp_path / "in", tmp_path / "out", "--engine", "ray")
    assert r.exit_code == 2, r.output
    assert INSTALL_HINT in r.stderr
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_ray() -> None:
    import subprocess

    # `animecli --help` itself, as the console script runs it, then a look at what it imported.
    code = ("import sys\n"
            "sys.argv = ['animecli', '--help']\n"
            "from animecli.__main__ import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "heavy = sorted(m for m in ('ray', 'torch', 'onnxruntime') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    # `python -c` puts its working folder first on sys.path: run it in this checkout, so that the animecli
    # whose --help is checked is the one under test, wherever pytest was started.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "convert" in done.stdout


def test_plan_pool() -> None:
    cpu_only = {"CPU": 8.0}
    four_gpus = {"CPU": 32.0, "GPU": 4.0}
    eng = EngineOptions()
    assert plan_pool(cpu_only, eng, RayOptions(), 100) == plan_pool(cpu_only, eng, RayOptions(), 100)
    p = plan_pool(cpu_only, eng, RayOptions(), 100)
    assert (p.workers, p.gpus, p.cpus, p.device) == (8, 0.0, 1, "cpu")
    p = plan_pool(cpu_only, EngineOptions(threads=4), RayOptions(), 100)
    assert (p.workers, p.cpus) == (2, 4)
    assert plan_pool(cpu_only, eng, RayOptions(), 3).workers == 3  # never more actors than images
    p = plan_pool(four_gpus, eng, RayOptions(), 100)
    assert (p.workers, p.gpus, p.device) == (4, 1.0, "cuda")
    p = plan_pool(four_gpus, eng, RayOptions(num_gpus_per_worker=0.5), 100)
    assert (p.workers, p.gpus) == (8, 0.5)
    p = plan_pool(four_gpus, EngineOptions(device="cpu"), RayOptions(workers=3), 100)
    assert (p.workers, p.gpus, p.device) == (3, 0.0, "cpu")
    with pytest.raises(UsageError):
        plan_pool(four_gpus, EngineOptions(device="cuda:1"), RayOptions(), 100)
    with pytest.raises(UsageError):
        plan_pool(four_gpus, EngineOptions(device="cpu"), RayOptions(num_gpus_per_worker=1), 100)
    with pytest.raises(UsageError):
        plan_pool(four_gpus, EngineOptions(device="cuda"), RayOptions(num_gpus_per_worker=0), 100)
    with pytest.raises(SetupError, match="GPU"):
        plan_pool(cpu_only, EngineOptions(device="cuda"), RayOptions(), 100)


def test_convert_options_default_to_local() -> None:
    opts = ConvertOptions(("x",), Path("out"), model=ModelChoice())
    assert opts.engine_kind is EngineKind.LOCAL and opts.ray == RayOptions()


def test_worker_rows_match_local_rules_and_stop_at_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               tiny_weights_dir: Path) -> None:
    """The actors' per-batch work, without Ray: failures per file; an unwritable output stops the rest."""
    import animecli.io.writer
    from animecli.errors import OutputError
    from animecli.inference.torch_engine import Engine
    from animecli.io.discovery import Job
    from animecli.options import LoadOptions, WriteOptions
    from animecli.run.ray import convert_jobs
    from animecli.weights.resolve import load_generator

    loaded = load_generator(ModelChoice())
    engine = Engine(loaded.model, loaded.input_multiple, EngineOptions(device="cpu"), loaded.spec.arch.value)
    src = tmp_path / "in"
    jobs = [Job(make_photo(src / f"{n}.png", (20, 16), seed=i), tmp_path / "out" / f"{n}.png", "a note" if i else "")
            for i, n in enumerate(["a", "b", "c"])]
    (src / "bad.png").write_bytes(b"nope")
    jobs.insert(1, Job(src / "bad.png", tmp_path / "out" / "bad.png"))
    rows = convert_jobs(engine, jobs, LoadOptions(), WriteOptions(), batch_size=2)
    assert [(r.status.value if r else None, f) for r, f in rows] == [
        ("converted", ""), ("failed", ""), ("converted", ""), ("converted", "")]
    assert rows[1][0] is not None and "not a recognised image" in rows[1][0].reason
    assert rows[2][0] is not None and rows[2][0].notes == "a note"

    real_save = animecli.io.writer.save_image
    calls = []

    def full_after_one(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        if len(calls) > 1:
            raise OutputError("cannot write to out (No space left on device); free some space")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(animecli.io.writer, "save_image", full_after_one)
    rows = convert_jobs(engine, jobs, LoadOptions(), WriteOptions(), batch_size=1)
    assert rows[0][0] is not None and rows[0][0].status.value == "converted"
    assert rows[1][0] is not None and rows[1][0].status.value == "failed"  # decoded before the disk filled
    assert all(r is None and "No space left" in f for r, f in rows[2:])
    assert len(calls) == 2  # nothing written after the first OutputError


def test_connect_puts_our_signal_handlers_back() -> None:
    """ray.init replaces the SIGTERM handler (its own exits at once, and a native one aborts:
    exit 134, no report); the run's handlers must be the ones in place afterwards."""
    import signal

    from animecli.run.ray import _connect

    def ours(signum: int, frame: object) -> None:
        pass

    class FakeRay:
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs: object) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, ours)
        signal.signal(signal.SIGINT, ours)
        assert _connect(FakeRay(), None) is True
        assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGINT) is ours
    finally:
        for s, h in before.items():
            signal.signal(s, h)


@pytest.mark.slow
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_ray_runs_an_imported_animeganv3_file_as_locally(ray_instance: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, eps: float) -> None:
    """Issue 22 item 4: ``--engine ray --weights FILE.onnx``; the actors rebuild the imported module from
    the driver's spec (eps from the file, 0 as in the fp16 Hayao file) and weights."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests import onnx_graphs as graphs

    monkeypatch.setenv("ANIMECLI_HOME", str(tmp_path / "home"))
    teacher = tmp_path / "v3.onnx"
    onnx.save(graphs.v3_graph(base=2, eps=eps), str(teacher))
    src = tmp_path / "in"
    for i in range(3):
        make_photo(src / f"p{i}.png", (40 + 8 * i, 32), seed=i)
    from PIL import Image

    Image.new("RGB", (24, 24), (128, 128, 128)).save(src / "flat.png")  # one colour: 0/0 with eps 0
    local, dist = tmp_path / "local", tmp_path / "ray"
    r_local = convert(src, local, "--weights", teacher)
    r_ray = convert(src, dist, "--weights", teacher, "--engine", "ray", "--workers", "2")
    assert r_local.exit_code == 0, r_local.output
    assert r_ray.exit_code == 0, r_ray.output
    assert outputs(local) == outputs(dist) and len(outputs(local)) == 4
