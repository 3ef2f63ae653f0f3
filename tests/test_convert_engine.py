"""``animecli convert``: the engine. Batched output equals unbatched, batches of mixed sizes keep the
input order (and a lone odd size does not hold the records back), --backend traced and --precision bf16
against eager float32.

Every test uses the tiny seeded generators of ``tiny_weights_dir`` on images of a few dozen pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from animecli.run.report import FileRecord
from tests.conftest import cli_convert as convert
from tests.conftest import files_under, make_photo, pixels, read_report

# Every test here runs against the tiny seeded models of conftest, never the shipped ones.
pytestmark = pytest.mark.usefixtures("tiny_weights_dir")


# batching


def test_batched_output_equals_unbatched(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(5):
        make_photo(src / f"s{i}.png", (24, 20), seed=10 + i)
    for i in range(2):
        make_photo(src / f"t{i}.png", (20, 28), seed=20 + i)  # a second size, batched separately
    names = sorted(p.name for p in src.iterdir())
    r1 = convert(src, tmp_path / "b1", "--batch-size", "1")
    r3 = convert(src, tmp_path / "b3", "--batch-size", "3")
    assert r1.exit_code == 0 and r3.exit_code == 0, r1.output + r3.output
    assert files_under(tmp_path / "b1") == files_under(tmp_path / "b3") == set(names)
    for name in names:
        a, b = pixels(tmp_path / "b1" / name), pixels(tmp_path / "b3" / name)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1, name
    # different inputs really give different outputs (no batch mix-up hidden by equal results)
    assert np.abs(pixels(tmp_path / "b3" / "s0.png") - pixels(tmp_path / "b3" / "s1.png")).max() > 0


def test_batches_of_mixed_sizes_report_in_input_order(tmp_path: Path, tiny_weights_dir: Path) -> None:
    """Images of one size run together, so they finish out of order; the log and report do not."""
    src = tmp_path / "in"
    sizes = [(40, 30), (40, 30), (24, 36), (40, 30), (24, 36), (40, 30), (33, 20)]
    for i, size in enumerate(sizes):
        make_photo(src / f"m{i}.png", size, seed=i)
    (src / "m4b.png").write_bytes(b"broken")  # a failure between them keeps its place too
    r = convert(src, tmp_path / "out", "--batch-size", "3", "--verbose", "--report", tmp_path / "r.json")
    assert r.exit_code == 1, r.output
    names = ["m0", "m1", "m2", "m3", "m4", "m4b", "m5", "m6"]
    assert [Path(row["src"]).stem for row in read_report(tmp_path / "r.json")["files"]] == names
    logged = [Path(line.split()[1]).stem for line in r.stdout.splitlines() if line.startswith("converted")]
    assert logged == [n for n in names if n != "m4b"]


def test_a_lone_odd_size_does_not_hold_back_the_records(tmp_path: Path, tiny_weights_dir: Path) -> None:
    """With --batch-size 4, one image of a size nobody shares runs after at most 2×4 arrivals,
    so the records after it are not held back to the end of the run."""
    from animecli.options import ConvertOptions, EngineOptions, LoadOptions, ModelChoice, WriteOptions
    from animecli.run.convert import run_convert

    src = tmp_path / "in"
    make_photo(src / "a00_odd.png", (40, 28))
    for i in range(1, 17):
        make_photo(src / f"a{i:02d}.png", (32, 32), seed=i)
    seen: list[str] = []
    converted_when_odd_emitted: list[int] = []

    def on_record(rec: FileRecord) -> None:
        seen.append(Path(rec.src).stem)
        if Path(rec.src).stem == "a00_odd":
            converted_when_odd_emitted.append(len(list((tmp_path / "out").glob("a*.png"))))

    opts = ConvertOptions(inputs=(str(src),), output=tmp_path / "out", recursive=True, model=ModelChoice(),
                          load=LoadOptions(), engine=EngineOptions(device="cpu", batch_size=4, threads=1),
                          write=WriteOptions(workers=0), report=None)
    summary = run_convert(opts, on_record)
    assert summary.converted == 17
    assert seen == sorted(seen)  # input order
    assert converted_when_odd_emitted and converted_when_odd_emitted[0] <= 1 + 2 * 4 + 4


# --backend traced and --precision bf16


def _convert_twice(
    tmp_path: Path, sizes: tuple[tuple[int, int], ...], first: tuple[str, ...], second: tuple[str, ...]
) -> tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Convert the same photos with two option sets: the second run's report summary and,
    per photo, (input, first output, second output) pixels."""
    src, rep = tmp_path / "in", tmp_path / "r.json"
    names = [f"p{i}.png" for i in range(len(sizes))]
    for i, (name, size) in enumerate(zip(names, sizes, strict=True)):
        make_photo(src / name, size, seed=i + 1)
    r = convert(src, tmp_path / "first", *first)
    assert r.exit_code == 0, r.output
    r = convert(src, tmp_path / "second", *second, "--report", rep)
    assert r.exit_code == 0, r.output
    outputs = [(pixels(src / n), pixels(tmp_path / "first" / n), pixels(tmp_path / "second" / n)) for n in names]
    for _, a, b in outputs:
        assert a.shape == b.shape
    return read_report(rep)["summary"], outputs


def test_traced_backend_matches_eager(tmp_path: Path) -> None:
    summary, outputs = _convert_twice(tmp_path, ((40, 30), (33, 21)), ("--backend", "eager"), ("--backend", "traced"))
    assert summary["backend"] == "traced"
    for _, a, b in outputs:
        assert np.abs(a.astype(np.int64) - b).max() <= 1


def test_bf16_on_cpu_converts_close_to_float32(tmp_path: Path) -> None:
    # bfloat16 on the CPU: eager PyTorch with float32 norm statistics (summed in chunks).
    summary, outputs = _convert_twice(tmp_path, ((40, 30), (36, 52)), ("--backend", "eager"), ("--precision", "bf16"))
    assert (summary["precision"], summary["backend"]) == ("bfloat16", "eager")
    for photo, a, b in outputs:
        diff = np.abs(a.astype(np.float64) - b)
        assert diff.mean() < 3.0 and diff.max() <= 40, (diff.mean(), diff.max())
        assert np.abs(b.astype(np.float64) - photo).mean() > diff.mean()  # stylised, not a copy
