# Over 400 lines (just): one resumable prune → fine-tune loop with its checkpoint format and command line.
"""Prune an imported AnimeGANv3 teacher and fine-tune the pruned copy by distillation from the teacher itself.

The teacher is our float module of the ONNX file (:func:`animecli.weights.onnx_import.import_onnx`),
run in torch on the fly (no onnxruntime, no cached pairs: the hint losses need its
intermediate features). One run prunes in stages (``ratios``, e.g. 0.25 then 0.5 of
the teacher's widths), ranking the channels of the current student each time
(:mod:`animecli.training.prune`), and fine-tunes after each stage on random crops
of the training photos with

* L1 to the teacher's output, plus ``edge_weight`` × L1 of the Sobel responses
  (the line work), and
* ``hint_weight`` × the mean over all block outputs of the MSE between the
  student's channels and the teacher's *same* (kept) channels, each divided by
  the teacher feature's mean square so that every layer counts alike.

Everything lives in ``work_dir``: ``checkpoint.pt`` (resumable: stage, step,
weights, optimiser, kept channels), ``pruned_R.pt`` (stage R right after pruning,
before fine-tuning) and ``student_R.pt`` (after its fine-tuning), R = the ratio
×100. Student files are plain dicts (``torch.load(weights_only=True)``) that
:func:`load_student` turns back into a module.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from animecli.atomic import atomic_write
from animecli.io.photos import is_photo
from animecli.models.animeganv3 import AnimeGANv3Generator, AnimeGANv3TinyGenerator
from animecli.training.distill import random_square, to_tensor, to_unit
from animecli.training.losses import sobel_edges
from animecli.training.prune import (
    PrunableGenerator,
    apply_plan,
    compose,
    feature_points,
    plan_pruning,
    spec_for,
)

__all__ = [
    "PruneDistillConfig",
    "load_student",
    "load_teacher",
    "main",
    "random_crops",
    "run",
    "save_student",
]


@dataclass(frozen=True)
class PruneDistillConfig:
    """One pruning + distillation run.

    Attributes:
        teacher: the AnimeGANv3 (full or tiny) ONNX file.
        photos: training photos (never the validation set).
        work_dir: checkpoints and per-stage students.
        ratios: the pruning stages, each a share of the *teacher's* widths
            removed, increasing (``(0.25, 0.5)``: gradual pruning to half).
        steps: fine-tuning steps after each stage (``steps_per_stage``), or in all if a
            single int is given and ``split`` is true.
        crop: side of the random training crops.
        context: photos are rescaled to a short side of about this before cropping
            (0 = ``crop``; see :func:`random_crops`).
        batch: crops per step.
        lr: peak Adam learning rate (cosine decay to 5 % over each stage).
        hint_weight, edge_weight: loss weights (see the module docstring).
        score_photos: training crops the channel ranking is measured on.
        probes: random projections per ranking photo.
        keep_ends: keep the first conv's outputs and the last conv's inputs whole.
        multiple: kept channel counts are multiples of this.
        seed: seeds crops and ranking.
        threads: torch threads (0 = leave torch's default).
        checkpoint_every: steps between checkpoints.
        init: a student file of this module (of the same teacher) the first stage
            prunes further, instead of the teacher (to go on from a finished run).
    """

    teacher: Path
    photos: Path
    work_dir: Path
    ratios: tuple[float, ...] = (0.5,)
    steps: int = 1000
    crop: int = 256
    context: int = 0
    batch: int = 4
    lr: float = 2e-4
    hint_weight: float = 1.0
    edge_weight: float = 0.5
    score_photos: int = 16
    probes: int = 4
    keep_ends: bool = True
    multiple: int = 8
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 25
    init: Path | None = None

    @property
    def checkpoint(self) -> Path:
        """``WORK/checkpoint.pt``."""
        return self.work_dir / "checkpoint.pt"

    def stage_file(self, kind: str, ratio: float) -> Path:
        """``WORK/{kind}_{ratio×100}.pt`` (kind ``pruned`` or ``student``)."""
        return self.work_dir / f"{kind}_{round(ratio * 100):02d}.pt"


def _save(dest: Path, obj: object) -> None:
    atomic_write(dest, lambda f: torch.save(obj, f))


def load_teacher(path: Path) -> PrunableGenerator:
    """The ONNX teacher as our float module (eval, no gradients).

    Raises:
        WeightsError: not a readable generator (from the importer).
        TypeError: a generator the pruning does not support (AnimeGANv2).
    """
    from animecli.weights.onnx_import import import_onnx

    module = import_onnx(path).module
    if not isinstance(module, (AnimeGANv3Generator, AnimeGANv3TinyGenerator)):
        raise TypeError(f"{path}: pruning supports AnimeGANv3 (full or tiny) teachers, this is {type(module).__name__}")
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def student_record(model: PrunableGenerator, kept: dict[str, torch.Tensor], **meta: object) -> dict[str, object]:
    """A student as a plain dict (``weights_only`` loadable)."""
    rec: dict[str, object] = {
        "arch": "animeganv3" if isinstance(model, AnimeGANv3Generator) else "animeganv3-tiny",
        "widths": list(model.widths),
        "eps": model.eps,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "kept": {k: v.clone() for k, v in kept.items()},
    }
    if isinstance(model, AnimeGANv3Generator):
        rec["attn_eps"] = model.attn_eps
    else:
        rec["final_norm"] = model.final_norm
    rec.update(meta)
    return rec


def save_student(dest: Path, model: PrunableGenerator, kept: dict[str, torch.Tensor], **meta: object) -> None:
    """Write :func:`student_record` atomically."""
    _save(dest, student_record(model, kept, **meta))


def _build(rec: dict[str, object]) -> PrunableGenerator:
    widths = [int(v) for v in rec["widths"]]  # type: ignore[attr-defined]
    eps = float(rec["eps"])  # type: ignore[arg-type]
    model: PrunableGenerator
    if rec["arch"] == "animeganv3":
        model = AnimeGANv3Generator(eps=eps, attn_eps=float(rec["attn_eps"]), widths=widths)  # type: ignore[arg-type]
    else:
        model = AnimeGANv3TinyGenerator(final_norm=bool(rec["final_norm"]), eps=eps, widths=widths)
    model.load_state_dict(rec["state_dict"], strict=True)  # type: ignore[arg-type]
    return model


def load_student(path: Path) -> PrunableGenerator:
    """A student file written by this module, as a module in eval mode."""
    rec = torch.load(path, weights_only=True, map_location="cpu")
    return _build(rec).eval()


def list_photos(folder: Path) -> list[Path]:
    """Image files of ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if is_photo(p))


def random_crops(photos: list[Path], size: int, count: int, rng: random.Random, context: int = 0) -> torch.Tensor:
    """``count`` random size×size crops as (count, 3, size, size) in [-1, 1].

    Each photo is rescaled so its short side is 1.0–1.5 × ``context`` (0: × ``size``),
    randomly cropped and flipped. A ``context`` near the short side photos have when
    they are stylised (about 340 for a long side of 512) keeps small crops at the
    scale of use: the style's strokes and the norms' statistics depend on it.
    """
    out: list[torch.Tensor] = []
    while len(out) < count:
        path = photos[rng.randrange(len(photos))]
        try:
            with Image.open(path) as im:
                square = random_square(im, max(size, context), rng)
        except (OSError, ValueError):  # an unreadable photo: draw another
            continue
        if square.width > size:
            x0, y0 = rng.randint(0, square.width - size), rng.randint(0, square.height - size)
            square = square.crop((x0, y0, x0 + size, y0 + size))
        out.append(to_tensor(square))
    return to_unit(torch.stack(out))


@contextmanager
def _features(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            store[name] = out
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def losses(student: PrunableGenerator, teacher: PrunableGenerator, kept: dict[str, torch.Tensor],
           x: torch.Tensor, hint_weight: float, edge_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss on a batch ``x`` ((N, 3, H, W) in [-1, 1]), with its parts for logging."""
    points = feature_points(student)
    names = [n for n, _ in points]
    with torch.no_grad(), _features(teacher, names) as tf:
        yt = teacher(x)
        # The LeakyReLUs work in place: keep only the kept channels, copied.
        tfeat = {n: tf[n][:, kept[g]].clone() for n, g in points}
    with _features(student, names) as sf:
        ys = student(x)
        sfeat = dict(sf)
    l1 = F.l1_loss(ys, yt)
    edge = F.l1_loss(sobel_edges(ys), sobel_edges(yt))
    hint = torch.stack([F.mse_loss(sfeat[n], tfeat[n]) / (tfeat[n].pow(2).mean() + 1e-6) for n in names]).mean()
    total = l1 + edge_weight * edge + hint_weight * hint
    return total, {"l1": float(l1.detach()), "edge": float(edge.detach()), "hint": float(hint.detach())}


def _lr(cfg: PruneDistillConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / 20)
    return cfg.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps))))


ProgressFn = Callable[[str], None]


def run(cfg: PruneDistillConfig, out: Path | None = None, progress: ProgressFn | None = None,
        max_steps: int | None = None) -> Path | None:
    """Prune and fine-tune, resuming from ``cfg.checkpoint`` if there is one.

    Args:
        out: where the final student goes (default ``WORK/student_R.pt`` of the last stage).
        progress: gets one-line log messages.
        max_steps: stop (after checkpointing) once this many steps ran in this call,
            for resumable chunks; ``None`` runs to the end.

    Returns:
        the final student's path, or ``None`` if stopped early by ``max_steps``.
    """
    log = progress or (lambda _m: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if list(cfg.ratios) != sorted(cfg.ratios) or not cfg.ratios:
        raise ValueError(f"ratios must be increasing, got {cfg.ratios}")
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    photos = list_photos(cfg.photos)
    if not photos:
        raise ValueError(f"no photos in {cfg.photos}")
    teacher = load_teacher(cfg.teacher)
    sha = hashlib.sha256(cfg.teacher.read_bytes()).hexdigest()
    reference = teacher.widths
    stage, step = 0, 0
    student: PrunableGenerator | None = None
    kept: dict[str, torch.Tensor] = {g: torch.arange(spec_for(teacher).width(reference, g))
                                     for g in spec_for(teacher).groups()}
    opt_state: dict[str, object] | None = None
    if cfg.checkpoint.exists():
        ck = torch.load(cfg.checkpoint, weights_only=True)
        if ck["teacher_sha256"] != sha or tuple(ck["ratios"]) != tuple(cfg.ratios):
            raise ValueError(f"{cfg.checkpoint} belongs to another teacher or other ratios; use a new work dir")
        stage, step = int(ck["stage"]), int(ck["step"])
        if ck["student"] is not None:  # mid-stage; ``None``: the stage is still to be pruned
            student = _build(ck["student"])
            kept = ck["student"]["kept"]
            opt_state = ck["optimizer"]
        if stage < len(cfg.ratios):
            log(f"resumed stage {stage} ({cfg.ratios[stage]}) at step {step}")
        else:  # a finished run: rerunning the command only writes the final student again
            log(f"already finished: {cfg.stage_file('student', cfg.ratios[-1])}")
    ran = 0
    while stage < len(cfg.ratios):
        ratio = cfg.ratios[stage]
        if student is None:
            prev = cfg.stage_file("student", cfg.ratios[stage - 1]) if stage else cfg.init
            base: PrunableGenerator = teacher
            base_kept = kept
            if prev is not None:
                rec = torch.load(prev, weights_only=True)
                if stage == 0 and rec.get("teacher_sha256") != sha:
                    raise ValueError(f"--init {prev} was distilled from another teacher than {cfg.teacher}")
                base, base_kept = _build(rec).eval(), rec["kept"]
            rng = random.Random(cfg.seed * 7919 + stage)
            scoring = [random_crops(photos, cfg.crop, 1, rng, cfg.context) for _ in range(cfg.score_photos)]
            t0 = time.perf_counter()
            plan = plan_pruning(base, ratio, scoring, keep_ends=cfg.keep_ends, multiple=cfg.multiple,
                                reference=reference, probes=cfg.probes, seed=cfg.seed)
            student = apply_plan(base, plan)
            for p in student.parameters():
                p.requires_grad_(True)
            kept = compose(base_kept, plan.kept)
            save_student(cfg.stage_file("pruned", ratio), student, kept, ratio=ratio, steps=0, teacher_sha256=sha)
            log(f"stage {stage}: pruned to {ratio} in {time.perf_counter() - t0:.0f} s, widths {plan.widths}")
            step, opt_state = 0, None
        student.train()
        opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        t0, ran_here = time.perf_counter(), 0
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, step)
            # Seeded by the step, so a resumed run draws the same crops as an uninterrupted one.
            rng = random.Random(cfg.seed * 1_000_003 + stage * 100_003 + step)
            x = random_crops(photos, cfg.crop, cfg.batch, rng, cfg.context)
            loss, parts = losses(student, teacher, kept, x, cfg.hint_weight, cfg.edge_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            ran += 1
            ran_here += 1
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or (max_steps is not None and ran >= max_steps):
                _save(cfg.checkpoint, {
                    "teacher_sha256": sha, "ratios": list(cfg.ratios), "stage": stage, "step": step,
                    "student": student_record(student, kept), "optimizer": opt.state_dict()})
                rate = (time.perf_counter() - t0) / max(1, ran_here)
                log(f"stage {stage} step {step}/{cfg.steps} loss {float(loss.detach()):.4f} "
                    + " ".join(f"{k} {v:.4f}" for k, v in parts.items()) + f" ({rate:.2f} s/step)")
            if max_steps is not None and ran >= max_steps and step < cfg.steps:
                return None
        save_student(cfg.stage_file("student", ratio), student.eval(), kept, ratio=ratio, steps=cfg.steps,
                     teacher_sha256=sha)
        log(f"stage {stage} done: {cfg.stage_file('student', ratio)}")
        stage += 1
        student, opt_state = None, None
        _save(cfg.checkpoint, {"teacher_sha256": sha, "ratios": list(cfg.ratios), "stage": stage, "step": 0,
                               "student": None, "optimizer": None})
        if max_steps is not None and ran >= max_steps and stage < len(cfg.ratios):
            return None
    final = cfg.stage_file("student", cfg.ratios[-1])
    if out is not None:
        rec = torch.load(final, weights_only=True)
        _save(out, rec)
        return out
    return final


def main(argv: list[str] | None = None) -> int:
    """``python -m animecli.training.prune_distill``: see ``--help``."""
    ap = argparse.ArgumentParser(prog="python -m animecli.training.prune_distill", description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True, help="AnimeGANv3 ONNX teacher")
    ap.add_argument("--prune", type=float, required=True, help="share of the teacher's widths to remove, e.g. 0.5")
    ap.add_argument("--stages", type=str, default="",
                    help="comma-separated gradual ratios ending at --prune (default: --prune alone)")
    ap.add_argument("--steps", type=int, default=1000, help="fine-tuning steps per stage")
    ap.add_argument("--out", type=Path, required=True, help="the final student file")
    ap.add_argument("--work", type=Path, required=True, help="work dir (checkpoints; rerun to resume)")
    ap.add_argument("--photos", type=Path, default=Path("../shared/photos/train"))
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--context", type=int, default=0, help="rescale photos to about this short side before cropping")
    ap.add_argument("--score-photos", type=int, default=16, help="crops the channel ranking is measured on")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--hint-weight", type=float, default=1.0)
    ap.add_argument("--edge-weight", type=float, default=0.5)
    ap.add_argument("--prune-ends", action="store_true",
                    help="also prune the first conv's outputs / last conv's inputs")
    ap.add_argument("--multiple", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--init", type=Path, default=None, help="prune this student further instead of the teacher")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="stop after this many steps in this call (resume later)")
    a = ap.parse_args(argv)
    ratios = tuple(float(v) for v in a.stages.split(",")) if a.stages else (a.prune,)
    if ratios[-1] != a.prune:
        ap.error(f"--stages must end at --prune {a.prune}")
    cfg = PruneDistillConfig(teacher=a.teacher, photos=a.photos, work_dir=a.work, ratios=ratios, steps=a.steps,
                             crop=a.crop, context=a.context, score_photos=a.score_photos, batch=a.batch,
                             lr=a.lr, hint_weight=a.hint_weight,
                             edge_weight=a.edge_weight, keep_ends=not a.prune_ends, multiple=a.multiple,
                             threads=a.threads, init=a.init)
    done = run(cfg, a.out, progress=lambda m: print(m, flush=True), max_steps=a.max_steps)
    print(f"wrote {done}" if done else "stopped early; rerun the same command to resume", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
