"""Distillation end to end on a real teacher, tiny settings (needs ../shared/teachers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from animecli.errors import UsageError
from animecli.models.spec import Arch
from animecli.options import ModelChoice
from animecli.training.distill import DistillConfig, train
from animecli.training.evaluate import evaluate
from animecli.training.export import export_student
from animecli.training.losses import psnr, ssim
from animecli.weights.manifest import load_manifest
from animecli.weights.resolve import load_generator
from tests.conftest import SHARED, make_photo, needs_shared

TEACHER = SHARED / "teachers" / "animeganv3_cute.onnx"


def test_ssim_and_psnr_behave() -> None:
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert psnr(a, a) == float("inf")
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    assert float(ssim(a, noisy)) < 0.9
    assert 10 < psnr(a, noisy) < 30


@pytest.mark.parametrize("arch", [Arch.V2, Arch.LITE3])
def test_published_student_runs_as_it_was_trained(tmp_path: Path, arch: Arch) -> None:
    """Loaded by its manifest name, a student computes what distill's network computed.

    The manifest used to say align_corners=false for every student while distill trains v2
    with the default (true): a published v2 student upsampled differently from training.
    """
    from animecli.models.registry import build_generator
    from animecli.models.spec import ArchSpec

    torch.manual_seed(0)
    trained = build_generator(ArchSpec(arch))  # what distill.train builds
    with torch.no_grad():  # random norms' affine terms too, so every layer matters
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_student(trained.state_dict(), tmp_path, "toy", arch, "test", "test run", {})
    loaded = load_generator(ModelChoice("toy"), manifest=load_manifest(tmp_path))
    x = torch.rand(1, 3, 36, 52) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), trained(x), atol=1e-5)


@pytest.mark.shared
@needs_shared("teachers", "animeganv3_cute.onnx")
def test_distill_resume_export_eval(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    photos = tmp_path / "photos"
    for i in range(3):
        make_photo(photos / f"p{i}.jpg", size=(300, 280), seed=i)
    cfg = DistillConfig(
        teacher=TEACHER, photos=photos, work_dir=tmp_path / "run", pair_size=256, num_pairs=2,
        crop_size=64, final_size=256, final_fraction=0.34, batch_size=2, steps=2, threads=1, checkpoint_every=1,
    )
    train(cfg)
    assert len(list((tmp_path / "run" / "cache").glob("pair_*.pt"))) == 2
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    # Rerunning with more steps resumes from step 2 instead of starting over.
    seen: list[int] = []
    sd = train(cfg.__class__(**{**cfg.__dict__, "steps": 3}), lambda stage, i, n, parts: seen.append(i))
    assert [i for i in seen] == [3]
    entry = export_student(sd, tmp_path, "toy", Arch.LITE, "test", "test run", {"steps": 3}, make_default=True)
    manifest = load_manifest(tmp_path)
    assert manifest.default == "toy" and manifest.models["toy"].sha256 == entry.sha256
    loaded = load_generator(ModelChoice("toy"), manifest=manifest)
    val = tmp_path / "val"
    shutil.copytree(photos, val)
    result = evaluate(loaded.model, TEACHER, val, size=256, cache=tmp_path / "evalcache", sheet=tmp_path / "sheet.png")
    assert result is not None and result.count == 3
    assert 0 < result.psnr_db < 60 and -1 <= result.ssim <= 1
    assert result.look is not None and result.look.count == 3 and len(result.per_photo_look) == 3
    assert result.look.captured is not None and result.look.captured <= 1
    assert result.look.edge_ratio is not None and result.look.edge_ratio > 0
    assert (tmp_path / "sheet.png").stat().st_size > 0


@pytest.mark.shared
@needs_shared("teachers", "animeganv3_cute.onnx")
def test_distill_command_publishes_into_a_weights_folder(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from animecli.cli.app import app

    photos = tmp_path / "photos"
    for i in range(2):
        make_photo(photos / f"p{i}.jpg", size=(300, 280), seed=i)
    weights = tmp_path / "weights"
    args = [
        "distill", "--teacher", str(TEACHER), "--photos", str(photos), "--work-dir", str(tmp_path / "run"),
        "--output", str(tmp_path / "student.pt"), "--steps", "1", "--batch-size", "1", "--num-pairs", "1",
        "--pair-size", "256", "--crop-size", "64", "--threads", "1",
        "--publish", "toy", "--publish-dir", str(weights), "--default", "--style", "test style",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = load_manifest(weights)
    assert manifest.default == "toy"
    entry = manifest.models["toy"]
    assert entry.style == "test style" and entry.extra["teacher"] == TEACHER.name
    assert (weights / entry.file).is_file()
    loaded = load_generator(ModelChoice("toy"), manifest=manifest)
    assert loaded.spec.arch is Arch.LITE


def _one_still_step_from(tmp_path: Path, start: dict[str, torch.Tensor], arch: Arch, seed: int) -> DistillConfig:
    """A one-photo, one-step run at learning rate 0 that starts from ``start`` (saved as start.pt)."""
    photos = tmp_path / "photos"
    make_photo(photos / "p.jpg", size=(300, 280), seed=seed)
    torch.save(start, tmp_path / "start.pt")
    return DistillConfig(
        teacher=TEACHER, photos=photos, work_dir=tmp_path / "run", arch=arch, pair_size=256, num_pairs=1,
        crop_size=64, final_size=256, final_fraction=0.0, batch_size=1, steps=1, lr=0.0, threads=1,
        init=tmp_path / "start.pt",
    )


@pytest.mark.shared
@needs_shared("teachers", "animeganv3_cute.onnx")
def test_distill_starts_from_init_weights(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from animecli.models.registry import build_generator
    from animecli.models.spec import ArchSpec

    torch.manual_seed(11)
    start = build_generator(ArchSpec(Arch.LITE)).state_dict()
    cfg = _one_still_step_from(tmp_path, start, Arch.LITE, seed=5)
    sd = train(cfg)  # lr 0: the one step changes nothing, so the result is the init
    assert all(torch.equal(sd[k], start[k].float()) for k in start)
    torch.save(build_generator(ArchSpec(Arch.V2, width=0.25)).state_dict(), tmp_path / "v2.pt")
    bad = cfg.__class__(**{**cfg.__dict__, "work_dir": tmp_path / "run2", "init": tmp_path / "v2.pt"})
    with pytest.raises(UsageError, match=r"does not have \(it is a v2 student of width 0\.25\).*--arch"):
        train(bad)


@pytest.mark.shared
@needs_shared("teachers", "animeganv3_cute.onnx")
def test_distill_folds_a_lite2_init_into_lite3(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from animecli.models.registry import build_generator, detect_arch
    from animecli.models.spec import ArchSpec
    from animecli.training.distill import load_pairs, to_unit
    from animecli.training.fold import fold_lite2_into_lite3

    torch.manual_seed(12)
    start = build_generator(ArchSpec(Arch.LITE2, width=0.25)).state_dict()
    cfg = _one_still_step_from(tmp_path, start, Arch.LITE3, seed=6)
    # The full-width lite3 cannot take a width-1/4 init: a clear error, not a silent fresh start.
    with pytest.raises(UsageError, match=r"does not fit a lite3 student \(it is a lite2 student of width 0\.25\)"):
        train(cfg)
    torch.manual_seed(12)
    start = build_generator(ArchSpec(Arch.LITE2)).state_dict()
    torch.save(start, tmp_path / "start.pt")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    sd = train(cfg)  # lr 0: the result is the folded init
    assert detect_arch(sd) == (Arch.LITE3, 1.0)
    xs, _ = load_pairs(tmp_path / "run" / "cache", 1)
    expected = fold_lite2_into_lite3(start, to_unit(xs))
    assert sd.keys() == expected.keys()
    assert all(torch.allclose(sd[k], expected[k]) for k in sd)


def test_distill_device_and_precision_errors(tmp_path: Path) -> None:
    # Both are checked before the teacher or the photos are touched (neither exists here).
    from animecli.errors import SetupError, UsageError
    from animecli.options import Precision

    cfg = DistillConfig(teacher=tmp_path / "none.onnx", photos=tmp_path / "none", work_dir=tmp_path / "run",
                        device="cpu", precision=Precision.FP16)
    with pytest.raises(UsageError, match="bf16"):
        train(cfg)
    if not torch.cuda.is_available():
        with pytest.raises(SetupError, match="--device cpu"):
            train(DistillConfig(**{**cfg.__dict__, "device": "cuda", "precision": Precision.AUTO}))
    assert not (tmp_path / "run").exists()


@pytest.mark.shared
@needs_shared("teachers", "animeganv3_cute.onnx")
def test_distill_under_bf16_autocast_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from animecli.options import Precision

    photos = tmp_path / "photos"
    make_photo(photos / "p.jpg", size=(300, 280), seed=5)
    cfg = DistillConfig(
        teacher=TEACHER, photos=photos, work_dir=tmp_path / "run", arch=Arch.LITE3, pair_size=256, num_pairs=1,
        crop_size=64, final_size=256, final_fraction=0.0, batch_size=2, steps=2, threads=1, device="cpu",
        precision=Precision.BF16,
    )
    losses: list[float] = []
    sd = train(cfg, lambda stage, i, n, parts: losses.extend([parts["loss"]] if stage == "train" else []))
    assert len(losses) == 2 and all(0.0 < v < 10.0 for v in losses)
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in sd.values())
    # The weights moved away from their seeded initialisation: the bf16 steps really trained.
    from animecli.models.registry import build_generator
    from animecli.models.spec import ArchSpec

    torch.manual_seed(cfg.seed)
    init = build_generator(ArchSpec(Arch.LITE3)).state_dict()
    assert any(not torch.equal(init[k], sd[k]) for k in init if init[k].is_floating_point())
