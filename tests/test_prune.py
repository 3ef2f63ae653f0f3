"""Structured pruning of small, seeded AnimeGANv3 generators (full and tiny)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from animecli.models.animeganv3 import AnimeGANv3Generator, AnimeGANv3TinyGenerator, GeneratorV2TF
from animecli.training.prune import (
    PrunableGenerator,
    PrunePlan,
    apply_plan,
    channel_importance,
    compose,
    gated,
    plan_pruning,
    prune,
    spec_for,
)
from animecli.training.prune_distill import load_student, losses, save_student


def _models() -> list[PrunableGenerator]:
    torch.manual_seed(0)
    out: list[PrunableGenerator] = [AnimeGANv3Generator(base=4), AnimeGANv3TinyGenerator(base=4)]
    for m in out:
        # He-initialised weights (torch's default shrinks the signal layer by layer, so deep
        # channels would barely matter) and non-zero biases, so that a wrongly sliced layer shows.
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() == 1:
                    p.uniform_(-0.2, 0.2)
                else:
                    torch.nn.init.kaiming_normal_(p, a=0.2)
    return [m.eval() for m in out]


def _photos(n: int = 2, h: int = 32, w: int = 48) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(1, 3, h, w, generator=g) * 2 - 1 for _ in range(n)]


@pytest.fixture(params=["v3", "tiny"])
def model(request: pytest.FixtureRequest) -> PrunableGenerator:
    return _models()[0 if request.param == "v3" else 1]


def test_ratio_zero_is_the_identity(model: PrunableGenerator) -> None:
    x = _photos(1)[0]
    with torch.inference_mode():
        y = model(x)
    same = prune(model, 0.0, _photos())
    assert same.widths == model.widths
    with torch.inference_mode():
        assert torch.equal(same(x), y)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_pruned_model_is_narrower_and_runs_at_several_sizes(model: PrunableGenerator, ratio: float) -> None:
    small = prune(model, ratio, _photos(), keep_ends=False)
    assert type(small) is type(model)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    rebuilt = type(model)(widths=small.widths)  # its own width config is enough to rebuild it
    rebuilt.load_state_dict(small.state_dict(), strict=True)
    m = model.size_multiple
    for h, w in ((m * 2, m * 2), (m * 3, m * 5), (m * 4, m * 2)):
        with torch.inference_mode():
            y = small(torch.zeros(1, 3, h, w).uniform_(-1, 1))
        assert y.shape == (1, 3, h, w)
        assert torch.isfinite(y).all()


def test_keep_ends_leaves_first_and_last_convs_whole(model: PrunableGenerator) -> None:
    small = prune(model, 0.5, _photos())
    assert small.get_submodule("enc.0.1").weight.shape == model.get_submodule("enc.0.1").weight.shape
    assert small.get_submodule("out_layer.1").weight.shape == model.get_submodule("out_layer.1").weight.shape
    assert small.widths != model.widths


def test_a_zero_gate_is_exactly_the_removed_channel(model: PrunableGenerator) -> None:
    """For every group: gating one channel to 0 and removing it give the same output (the groups are right)."""
    spec = spec_for(model)
    x = _photos(1)[0]
    for group in spec.groups():
        if group in spec.fixed:
            continue
        width = spec.width(model.widths, group)
        drop = width // 2
        kept = {g: torch.arange(spec.width(model.widths, g)) for g in spec.groups()}
        kept[group] = torch.tensor([i for i in range(width) if i != drop])
        plan = PrunePlan(kept, tuple(int(kept[g].numel()) for g in spec.slot_groups), {})
        small = apply_plan(model, plan)
        gate = torch.ones(width)
        gate[drop] = 0.0
        with torch.inference_mode():
            with gated(model, {group: gate}):
                y_gated = model(x)
            y_small = small(x)
            y = model(x)
        assert float((y_gated - y).abs().max()) > 1e-2, f"group {group}: the channel does not matter in this model"
        torch.testing.assert_close(y_small, y_gated, atol=2e-4, rtol=1e-3, msg=f"group {group}")


def test_criterion_ranks_a_dead_channel_last(model: PrunableGenerator) -> None:
    spec = spec_for(model)
    group = "enc1"
    dead = 1
    m = copy.deepcopy(model)
    with torch.no_grad():
        # Nothing reads channel ``dead`` of the group any more (the LADE projection included).
        for name, _out, inp in spec.convs:
            if inp == group:
                m.get_submodule(name).weight[:, dead] = 0.0
    scores = channel_importance(m, _photos(), probes=2)
    s = scores[group]
    assert float(s[dead]) == 0.0
    assert int(torch.argmin(s)) == dead
    assert bool((torch.cat([s[:dead], s[dead + 1:]]) > 0).all())
    plan = plan_pruning(m, 0.5, _photos(), probes=2)
    assert dead not in plan.kept[group].tolist()


def test_gradual_pruning_composes_to_the_teacher_channels(model: PrunableGenerator) -> None:
    photos = _photos()
    first = plan_pruning(model, 0.25, photos, keep_ends=False)
    mid = apply_plan(model, first)
    second = plan_pruning(mid, 0.5, photos, keep_ends=False, reference=model.widths)
    final = apply_plan(mid, second)
    direct = plan_pruning(model, 0.5, photos, keep_ends=False)
    assert final.widths == direct.widths
    kept = compose(first.kept, second.kept)
    spec = spec_for(model)
    # The first conv's surviving filters are the teacher's filters with the composed indices.
    torch.testing.assert_close(final.get_submodule("enc.0.1").weight,
                               model.get_submodule("enc.0.1").weight[kept[spec.slot_groups[0]]])


def test_bad_inputs_are_refused(model: PrunableGenerator) -> None:
    with pytest.raises(ValueError, match="ratio"):
        prune(model, 1.0, _photos())
    with pytest.raises(TypeError, match="pruning supports"):
        spec_for(GeneratorV2TF(width=0.25))
    with pytest.raises(ValueError, match="skip"):
        w = list(model.widths)
        w[0] += 1
        type(model)(widths=w)


def test_student_file_round_trip_and_zero_loss_against_itself(model: PrunableGenerator, tmp_path: Path) -> None:
    small = prune(model, 0.5, _photos(), keep_ends=False)
    kept = {g: torch.arange(spec_for(small).width(small.widths, g)) for g in spec_for(small).groups()}
    dest = tmp_path / "s.pt"
    save_student(dest, small, kept, ratio=0.5)
    back = load_student(dest)
    x = _photos(1)[0]
    with torch.inference_mode():
        assert torch.equal(back(x), small(x))
    total, parts = losses(copy.deepcopy(small), small, kept, x, hint_weight=1.0, edge_weight=0.5)
    assert float(total.detach()) == pytest.approx(0.0, abs=1e-7)
    assert parts["hint"] == pytest.approx(0.0, abs=1e-7)


def test_l1_baseline_ranks_a_zero_filter_last(model: PrunableGenerator) -> None:
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.get_submodule("dec.1.1").weight[2] = 0.0
    plan = plan_pruning(m, 0.25, [], criterion="l1")
    assert 2 not in plan.kept["dec1"].tolist()
    assert float(plan.scores["dec1"][2]) == 0.0


def _tiny_teacher_and_photos(tmp_path: Path, full_eps: float | None = None) -> tuple[Path, Path]:
    """A tiny_Cute-like teacher (or, with ``full_eps``, a full AnimeGANv3 one with that LADE eps) and photos."""
    onnx = pytest.importorskip("onnx")
    from PIL import Image

    from tests import onnx_graphs as graphs

    teacher = tmp_path / "tiny.onnx"
    onnx.save(graphs.v3_tiny_graph(base=2) if full_eps is None else graphs.v3_graph(base=2, eps=full_eps), str(teacher))
    photos = tmp_path / "photos"
    photos.mkdir()
    g = torch.Generator().manual_seed(3)
    for i in range(3):
        arr = (torch.rand(40, 56, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(photos / f"p{i}.png")
    return teacher, photos


def test_prune_distill_resumes_to_the_same_student(tmp_path: Path) -> None:
    from animecli.training.prune_distill import PruneDistillConfig, run

    teacher, photos = _tiny_teacher_and_photos(tmp_path)

    def cfg(work: str) -> PruneDistillConfig:
        return PruneDistillConfig(teacher=teacher, photos=photos, work_dir=tmp_path / work, ratios=(0.25, 0.5),
                                  steps=2, crop=32, batch=1, score_photos=1, probes=1, multiple=1,
                                  checkpoint_every=1, keep_ends=False)

    whole = run(cfg("whole"))
    assert whole is not None
    calls = 0
    cut = None
    while cut is None:  # one step per call: every resume path (mid-stage, stage boundary) is taken
        cut = run(cfg("cut"), max_steps=1)
        calls += 1
        assert calls < 10
    assert calls >= 4
    a, b = load_student(whole), load_student(cut)
    t = load_student(cfg("whole").stage_file("pruned", 0.25))
    assert a.widths == b.widths and sum(a.widths) < sum(t.widths)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_prune_distill_goes_on_from_a_student(tmp_path: Path) -> None:
    from animecli.training.prune_distill import PruneDistillConfig, run

    teacher, photos = _tiny_teacher_and_photos(tmp_path)
    common = {"teacher": teacher, "photos": photos, "steps": 1, "crop": 32, "batch": 1, "score_photos": 1,
              "probes": 1, "multiple": 1, "keep_ends": False}
    first = run(PruneDistillConfig(work_dir=tmp_path / "a", ratios=(0.5,), **common))  # type: ignore[arg-type]
    assert first is not None
    more = run(PruneDistillConfig(work_dir=tmp_path / "b", ratios=(0.75,), init=first, **common))  # type: ignore[arg-type]
    assert more is not None
    a, b = load_student(first), load_student(more)
    assert all(wb <= wa for wa, wb in zip(a.widths, b.widths, strict=True)) and sum(b.widths) < sum(a.widths)
    rec_a = torch.load(first, weights_only=True)
    rec_b = torch.load(more, weights_only=True)
    # Kept channels are still indices into the teacher's channels, a subset of the first run's.
    for g, idx in rec_b["kept"].items():
        assert set(idx.tolist()) <= set(rec_a["kept"][g].tolist())


@pytest.mark.parametrize("keep_ends", [True, False])
def test_a_pruned_state_dict_loads_through_the_one_safe_loader(model: PrunableGenerator, tmp_path: Path,
                                                                 keep_ends: bool) -> None:
    """A plain state dict of a pruned generator: its widths come from its shapes (weights_only, strict)."""
    from animecli.models.registry import build_generator, detect_arch, fit_widths
    from animecli.models.spec import Arch, ArchSpec
    from animecli.options import ModelChoice
    from animecli.weights.checkpoint import build_and_load
    from animecli.weights.resolve import load_generator

    small = prune(model, 0.5, _photos(), keep_ends=keep_ends).eval()
    assert small.widths != model.widths
    path = tmp_path / "pruned.pt"
    torch.save(small.state_dict(), path)
    arch = Arch.V3 if isinstance(model, AnimeGANv3Generator) else Arch.V3_TINY
    sd = torch.load(path, weights_only=True)
    found = detect_arch(sd)
    assert found is not None and found[0] is arch
    # (With the ends pruned too, a half-width model may be exactly the release's layout at a smaller width.)
    assert build_generator(fit_widths(ArchSpec(arch, found[1]), sd)).widths == small.widths
    # The unpruned model's own state dict keeps the release's widths (no widths recorded).
    release_width = model.widths[0] / (32 if arch is Arch.V3 else 16)
    assert fit_widths(ArchSpec(arch, release_width), model.state_dict()).widths is None
    x = _photos(1)[0]
    with torch.inference_mode():
        want = small(x)
        built = build_and_load(ArchSpec(arch), sd, str(path))
        assert torch.equal(built(x), want)
        loaded = load_generator(ModelChoice(weights=path))
        assert loaded.spec.arch is arch and loaded.model.widths == small.widths
        assert torch.equal(loaded.model(x), want)


def test_pruned_weights_that_break_a_skip_addition_are_refused_in_one_line(tmp_path: Path) -> None:
    from animecli.errors import WeightsError
    from animecli.models.spec import Arch, ArchSpec
    from animecli.weights.checkpoint import build_and_load

    model = _models()[1]
    sd = dict(prune(model, 0.5, _photos()).state_dict())
    sd["enc.2.1.weight"] = sd["enc.2.1.weight"][:-1]  # enc2 now narrower than dec6, which it is added to
    sd["enc.2.1.bias"] = sd["enc.2.1.bias"][:-1]
    with pytest.raises(WeightsError, match=r"bad\.pt: weights do not fit the animeganv3-tiny architecture"):
        build_and_load(ArchSpec(Arch.V3_TINY), sd, "bad.pt")


def test_distill_prune_command_writes_a_loadable_student_and_publishes_it(tmp_path: Path) -> None:
    """``animecli distill --prune``: the resumable pruning run as a command; its output is a plain
    state dict that convert --weights and the manifest load (widths from the shapes)."""
    from typer.testing import CliRunner

    from animecli.cli.app import app
    from animecli.options import ModelChoice
    from animecli.weights.manifest import load_manifest
    from animecli.weights.resolve import load_generator

    teacher, photos = _tiny_teacher_and_photos(tmp_path, full_eps=0.0)  # eps 0 as in the fp16 Hayao file
    out, pub = tmp_path / "student.pt", tmp_path / "published"
    args = ["distill", "--teacher", str(teacher), "--photos", str(photos), "--work-dir", str(tmp_path / "w"),
            "--output", str(out), "--prune", "0.5", "--stages", "0.25,0.5", "--steps", "1", "--crop-size", "32",
            "--batch-size", "1", "--channel-multiple", "1", "--publish", "tinyp",
            "--publish-dir", str(pub)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    loaded = load_generator(ModelChoice(weights=out))
    assert loaded.spec.widths is not None  # narrower than the teacher: widths read from the shapes
    entry = load_manifest(pub).get("tinyp")
    assert entry.input_multiple == 8 and entry.arch.value == "animeganv3"
    assert entry.spec().norm_eps == 0.0  # the teacher's, so that -m tinyp runs what was trained
    published = torch.load(pub / entry.file, weights_only=True)
    assert published.keys() == loaded.model.state_dict().keys()
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in published.items())
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    student = load_student(tmp_path / "w" / "student_50.pt")
    named = load_generator(ModelChoice("tinyp"), manifest=load_manifest(pub))
    with torch.no_grad():
        assert torch.allclose(named.model(x), student(x), atol=1e-6)
        # A bare state dict holds no eps: --weights FILE.pt runs it with the arch's 1e-5, close to 0.
        assert torch.allclose(loaded.model(x), student(x), atol=2e-2)
    again = CliRunner().invoke(app, args)  # finished: the rerun resumes at the end and rewrites it
    assert again.exit_code == 0, again.output
    bad = CliRunner().invoke(app, [*args[:-4], "--stages", "0.5,0.25"])
    assert bad.exit_code == 2 and "--stages" in bad.output
