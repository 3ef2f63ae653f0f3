"""``animecli distill`` and ``eval`` with bad input, damaged work dirs and changed options.

A toy ONNX teacher (one 1×1 convolution, NHWC like the real ones) is exported here, so
these run without ../shared: one line and exit 2 for what the user must fix, nothing
half-written, resume refusing data it was not built from.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from animecli.cli.app import app
from animecli.models.registry import build_generator
from animecli.models.spec import Arch, ArchSpec
from animecli.training.distill import DistillConfig, train
from tests.conftest import make_photo

pytest.importorskip("onnxruntime")


class _ToyTeacher(torch.nn.Module):
    """(1, H, W, 3) in [-1, 1] → the same shape: a fixed colour mix, squashed."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1).flip(0) * gain)
            self.conv.bias.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


def _teacher(path: Path, gain: float = 0.8) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_ToyTeacher(gain), (torch.zeros(1, 64, 64, 3),), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {1: "h", 2: "w"}, "output": {1: "h", 2: "w"}})
    return path


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    photos = tmp_path / "photos"
    for i in range(3):
        make_photo(photos / f"p{i}.jpg", size=(120, 100), seed=i)
    return {"teacher": _teacher(tmp_path / "toy.onnx"), "photos": photos, "work": tmp_path / "run",
            "out": tmp_path / "student.pt"}


def _distill(s: dict[str, Path], *extra: str, **paths: Path) -> Result:
    p = {**s, **paths}
    args = ["distill", "--teacher", str(p["teacher"]), "--photos", str(p["photos"]), "--work-dir", str(p["work"]),
            "--output", str(p["out"]), "--steps", "2", "--batch-size", "1", "--num-pairs", "2",
            "--pair-size", "64", "--crop-size", "32", "--threads", "1", *extra]
    return CliRunner().invoke(app, args)


def _one_line_error(r: Result, *words: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # no traceback
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert all(w in r.output for w in words), r.output


def test_distill_then_resume_with_other_data_is_refused(setup: dict[str, Path], tmp_path: Path) -> None:
    assert _distill(setup).exit_code == 0
    other = _teacher(tmp_path / "other.onnx", gain=-0.5)
    _one_line_error(_distill(setup, "--steps", "4", teacher=other), "--teacher", "--work-dir")
    _one_line_error(_distill(setup, "--steps", "4", "--seed", "3"), "--seed")
    big = _distill(setup, "--steps", "4")  # same data, more steps: resumes
    assert big.exit_code == 0, big.output
    state = torch.load(setup["work"] / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4
    _one_line_error(_distill(setup, "--steps", "6", "--arch", "lite3"), "holds a lite student", "--arch lite")


def test_publish_says_when_it_replaces_an_entry(setup: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "w"
    first = _distill(setup, "--publish", "toy", "--publish-dir", str(weights))
    assert first.exit_code == 0, first.output
    assert "published toy" in first.output and "replaces" not in first.output
    old_sha = json.loads((weights / "manifest.json").read_text())["models"]["toy"]["sha256"]
    again = _distill(setup, "--steps", "3", "--publish", "toy", "--publish-dir", str(weights))
    assert again.exit_code == 0, again.output
    said = " ".join(again.output.split())
    assert f"replaces the earlier toy (toy_lite.pt, sha256 {old_sha})" in said


@pytest.mark.parametrize(("change", "words"), [
    ("teacher_folder", ("--teacher", "is a folder")),
    ("teacher_text", ("--teacher", "onnxruntime cannot load it")),
    ("photos_missing", ("--photos", "does not exist")),
    ("photos_file", ("--photos", "is a file")),
    ("photos_empty", ("no training photos",)),
    ("crop", ("--crop-size 80", "--pair-size 64")),
    ("work_file", ("--work-dir", "is a file")),
    ("output_folder", ("--output", "is a folder")),
    ("output_teacher", ("--output", "state dict", ".pt")),  # the teacher was overwritten by the student
    ("output_photo", ("--output", ".pt")),  # a training photo was overwritten
    ("output_checkpoint", ("--output", "checkpoint")),  # the training was lost
    ("output_cache", ("--output", "cached pairs")),
    ("cache_file", ("--work-dir", "is a file")),  # was a FileExistsError traceback
    ("init_junk", ("--init", "not a readable PyTorch state dict")),
    ("lr_nan", ("--lr nan",)),
    ("arch", ("--arch foo", "lite3")),
    ("publish", ("--publish", "model name")),
])
def test_distill_bad_input_is_one_line_and_exit_2(
    setup: dict[str, Path], tmp_path: Path, change: str, words: tuple[str, ...]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "w2").mkdir()
    (tmp_path / "w2" / "cache").write_text("a file where the pairs go")
    teacher_bytes = setup["teacher"].read_bytes()
    cases: dict[str, tuple[tuple[str, ...], dict[str, Path]]] = {
        "teacher_folder": ((), {"teacher": tmp_path}),
        "teacher_text": ((), {"teacher": text}),
        "photos_missing": ((), {"photos": tmp_path / "nope"}),
        "photos_file": ((), {"photos": text}),
        "photos_empty": ((), {"photos": empty}),
        "crop": (("--crop-size", "80"), {}),
        "work_file": ((), {"work": text / "run"}),
        "output_folder": ((), {"out": empty}),
        "output_teacher": ((), {"out": setup["teacher"]}),
        "output_photo": ((), {"out": setup["photos"] / "p0.jpg"}),
        "output_checkpoint": ((), {"out": setup["work"] / "checkpoint.pt"}),
        "output_cache": ((), {"out": setup["work"] / "cache" / "settings.pt"}),
        "cache_file": ((), {"work": tmp_path / "w2"}),
        "init_junk": (("--init", str(text)), {}),
        "lr_nan": (("--lr", "nan"), {}),
        "arch": (("--arch", "foo"), {}),
        "publish": (("--publish", "../evil", "--publish-dir", str(tmp_path / "w")), {}),
    }
    extra, paths = cases[change]
    _one_line_error(_distill(setup, *extra, **paths), *words)
    assert not setup["out"].exists() and not (tmp_path / "evil_lite.pt").exists()
    assert setup["teacher"].read_bytes() == teacher_bytes
    assert (setup["photos"] / "p0.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_unreadable_training_photos_are_skipped(setup: dict[str, Path]) -> None:
    (setup["photos"] / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (setup["photos"] / "aa_cut.jpg").write_bytes((setup["photos"] / "p0.jpg").read_bytes()[:200])
    r = _distill(setup, "--num-pairs", "6")
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and ("zz_bad.jpg" in r.output or "aa_cut.jpg" in r.output)
    assert setup["out"].is_file()


def test_a_failed_output_write_keeps_the_old_student(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup["out"].write_bytes(b"the previous student")
    sd = build_generator(ArchSpec(Arch.LITE, width=0.125)).state_dict()
    monkeypatch.setattr("animecli.training.distill.train", lambda cfg, progress=None, notice=None: sd)

    def full_disk(obj: object, f: object) -> None:
        f.write(b"half a stud")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    r = _distill(setup)
    assert r.exit_code == 1 and "could not write" in r.output and "rerun" in r.output, r.output
    assert setup["out"].read_bytes() == b"the previous student"


def test_ctrl_c_writes_a_checkpoint_at_the_current_step(setup: dict[str, Path]) -> None:
    cfg = DistillConfig(teacher=setup["teacher"], photos=setup["photos"], work_dir=setup["work"], pair_size=64,
                        num_pairs=2, crop_size=32, final_size=64, batch_size=1, steps=50, threads=1)
    notes: list[str] = []

    def progress(stage: str, i: int, n: int, parts: dict[str, float]) -> None:
        if stage == "train" and i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress, notes.append)
    assert torch.load(setup["work"] / "checkpoint.pt", weights_only=True)["step"] == 3  # not 0 (every 100)
    assert any("interrupted at step 3" in n for n in notes)


def test_damaged_checkpoint_and_pairs(setup: dict[str, Path]) -> None:
    assert _distill(setup).exit_code == 0
    pair = setup["work"] / "cache" / "pair_00001.pt"
    pair.write_bytes(b"junk")
    r = _distill(setup, "--steps", "3")
    assert r.exit_code == 0 and "made again" in r.output, r.output
    assert torch.load(pair, weights_only=True)["x"].shape == (3, 64, 64)
    (setup["work"] / "checkpoint.pt").write_bytes(b"cut")
    _one_line_error(_distill(setup, "--steps", "4"), "checkpoint.pt is damaged", "cannot be read", "delete it")
    # Readable but not a checkpoint: the message said "damaged (174812789)" or "damaged ('step')".
    torch.save(174812789, setup["work"] / "checkpoint.pt")
    _one_line_error(_distill(setup, "--steps", "4"), "holds a int, not a distill checkpoint")
    torch.save({"model": {}, "opt": {}}, setup["work"] / "checkpoint.pt")
    _one_line_error(_distill(setup, "--steps", "4"), "not a distill checkpoint: no step")


def _eval(weights: Path, teacher: Path, photos: Path, *extra: str) -> Result:
    return CliRunner().invoke(app, ["eval", "--weights", str(weights), "--teacher", str(teacher), "--photos",
                                    str(photos), "--size", "64", *extra])


def test_eval_cache_follows_the_pixels_not_the_names(setup: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "s.pt"
    torch.manual_seed(0)
    torch.save(build_generator(ArchSpec(Arch.LITE, width=0.125)).state_dict(), weights)
    other = tmp_path / "other"
    for i in range(3):  # the same names, other pictures
        make_photo(other / f"p{i}.jpg", size=(90, 130), seed=40 + i)
    cache = tmp_path / "cache"
    js = {name: tmp_path / f"{name}.json" for name in ("a", "b", "fresh")}
    a = _eval(weights, setup["teacher"], setup["photos"], "--cache", str(cache), "--json", str(js["a"]))
    assert a.exit_code == 0, a.output
    assert _eval(weights, setup["teacher"], other, "--cache", str(cache), "--json", str(js["b"])).exit_code == 0
    assert _eval(weights, setup["teacher"], other, "--cache", str(tmp_path / "c2"), "--json",
                 str(js["fresh"])).exit_code == 0
    b, fresh = (json.loads(js[k].read_text()) for k in ("b", "fresh"))
    assert b["psnr_db"] == fresh["psnr_db"] != json.loads(js["a"].read_text())["psnr_db"]
    # Another teacher under the same file name is not served the first one's outputs either.
    _teacher(setup["teacher"], gain=-0.5)
    assert _eval(weights, setup["teacher"], other, "--cache", str(cache), "--json", str(js["b"])).exit_code == 0
    assert json.loads(js["b"].read_text())["psnr_db"] != fresh["psnr_db"]


def test_eval_skips_unreadable_photos_and_checks_its_outputs_first(setup: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "s.pt"
    torch.save(build_generator(ArchSpec(Arch.LITE, width=0.125)).state_dict(), weights)
    (setup["photos"] / "zz_bad.jpg").write_bytes(b"junk")
    r = _eval(weights, setup["teacher"], setup["photos"], "--cache", str(tmp_path / "c"),
              "--json", str(tmp_path / "new" / "e.json"))
    assert r.exit_code == 0 and "skipped zz_bad.jpg" in r.output and "3 photos" in r.output, r.output
    assert json.loads((tmp_path / "new" / "e.json").read_text())["skipped"][0]["photo"] == "zz_bad.jpg"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(_eval(weights, setup["teacher"], setup["photos"], "--sheet", str(blocker / "s.png")),
                    "--sheet", "is a file, not a folder")
    _one_line_error(_eval(weights, setup["teacher"], tmp_path / "nope"), "--photos", "does not exist")


def test_eval_cache_in_the_way_is_a_one_line_error_and_an_unwritable_entry_is_skipped(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    weights = tmp_path / "s.pt"
    torch.save(build_generator(ArchSpec(Arch.LITE, width=0.125)).state_dict(), weights)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for cache in (blocker, blocker / "sub"):  # were FileExistsError / NotADirectoryError tracebacks
        _one_line_error(_eval(weights, setup["teacher"], setup["photos"], "--cache", str(cache)),
                        "--cache", "is a file, not a folder")
    # A folder where a cache entry goes (os.replace onto it raised IsADirectoryError): the figures
    # are computed all the same, only that entry is not cached.
    cache, js = tmp_path / "c", tmp_path / "e.json"
    assert _eval(weights, setup["teacher"], setup["photos"], "--cache", str(cache), "--json", str(js)).exit_code == 0
    first = json.loads(js.read_text())["psnr_db"]
    for entry in list(cache.iterdir()):
        entry.unlink()
        entry.mkdir()
    r = _eval(weights, setup["teacher"], setup["photos"], "--cache", str(cache), "--json", str(js))
    assert r.exit_code == 0, r.output
    assert json.loads(js.read_text())["psnr_db"] == first


def test_eval_reports_the_look_figures(setup: dict[str, Path], tmp_path: Path) -> None:
    weights, js = tmp_path / "s.pt", tmp_path / "e.json"
    torch.manual_seed(0)
    torch.save(build_generator(ArchSpec(Arch.LITE, width=0.125)).state_dict(), weights)
    r = _eval(weights, setup["teacher"], setup["photos"], "--cache", str(tmp_path / "c"), "--json", str(js))
    assert r.exit_code == 0, r.output
    assert "captured" in r.output and "a colour filter reaches" in r.output and "edge ratio" in r.output, r.output
    got = json.loads(js.read_text())
    # The toy teacher is a squashed channel swap: a per-photo affine colour map comes close to it,
    # an untrained student does not (it is further from the teacher than the photo is).
    assert 0.9 < got["colour_filter"] <= 1.0
    assert got["captured"] < got["colour_filter"]
    assert got["edge_ratio"] > 0
    assert len(got["per_photo"]) == 3
    for row in got["per_photo"]:
        assert {"captured", "colour_filter", "edge_ratio"} <= row.keys()
    assert f"captured {got['captured']:.3f}" in r.output
