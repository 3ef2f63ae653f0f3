"""``animecli distill`` and ``animecli eval``: train a student from an ONNX teacher, and score one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from animecli.errors import AnimecliError
from animecli.options import (
    Precision,
)

if TYPE_CHECKING:
    pass
from animecli.cli.console import EXIT_FAILED, EXIT_USAGE, check_output_files, err, fail, out, printable


def distill(
    teacher: Annotated[Path, typer.Option(help="ONNX teacher generator (see shared/teachers/README.md).")],
    photos: Annotated[Path, typer.Option(help="Folder of training photos.")],
    work_dir: Annotated[Path, typer.Option(help="Cache of teacher outputs and checkpoints; rerun to resume.")],
    output: Annotated[Path, typer.Option(help="Where to write the trained student's state dict (.pt).")],
    arch: Annotated[str, typer.Option(help="Student architecture: lite3 (lite2 without norms in its first conv and decoder; --init a lite/lite2 student to fold them), lite2 (slim full-resolution head), lite or v2.")] = "lite",
    steps: Annotated[int | None, typer.Option(min=1, help="Optimiser steps (default 4000; with --prune 1000 per stage).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Crops per step (default 8; with --prune 4).")] = None,
    crop_size: Annotated[int | None, typer.Option(min=32, help="Side of the training crops (default 256).")] = None,
    pair_size: Annotated[int, typer.Option(min=64, help="Side of the cached teacher pairs (fixed-size teachers: their size).")] = 512,
    num_pairs: Annotated[int, typer.Option(min=1, help="Teacher pairs to cache.")] = 400,
    final_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of steps on whole pairs.")] = 0.1,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate, cosine decay (default 2e-3 AdamW; with --prune 2e-4 Adam).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip photos whose name contains this (repeatable).")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Use only photos whose name contains this (repeatable).")] = None,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    init: Annotated[Path | None, typer.Option(help="Start from this student's weights (e.g. another style); ignored when resuming.")] = None,
    device: Annotated[str, typer.Option(help="auto (a CUDA GPU if present, else CPU), cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto = bf16 autocast on CUDA, fp32 on CPU; bf16 also helps on CPUs with AMX. fp16 is refused.")] = Precision.AUTO,
    publish: Annotated[str | None, typer.Option(help="Also publish the student under this model name (file + manifest entry).")] = None,
    publish_dir: Annotated[Path, typer.Option(help="Weights folder to publish into.")] = Path("weights"),
    style: Annotated[str, typer.Option(help="Style description for the manifest entry.")] = "",
    make_default: Annotated[bool, typer.Option("--default", help="Make the published model the default.")] = False,
    prune: Annotated[float | None, typer.Option(min=0.0, max=0.95, help="Instead of a student of --arch: the AnimeGANv3 teacher itself with this share of its channels removed (structured pruning), then distilled; e.g. 0.25.")] = None,
    stages: Annotated[str, typer.Option(help="With --prune: comma-separated gradual ratios ending at --prune, e.g. 0.25,0.5.")] = "",
    context: Annotated[int, typer.Option(min=0, help="With --prune: rescale photos to about this short side before cropping (0 = the crop size).")] = 0,
    prune_ends: Annotated[bool, typer.Option(help="With --prune: also prune the first conv's outputs and the last conv's inputs.")] = False,
    channel_multiple: Annotated[int, typer.Option(min=1, help="With --prune: kept channel counts are multiples of this (8 suits the CPU kernels).")] = 8,
) -> None:
    """Train a student generator to imitate a teacher (knowledge distillation), or prune the teacher
    itself and distil it (--prune). Resumable: rerun the same command."""
    import time

    if prune is not None:
        _prune_distill(teacher, photos, work_dir, output, prune, stages, steps or 1000, batch_size or 4,
                       crop_size or 256, context, lr or 2e-4, prune_ends, channel_multiple, threads, seed,
                       publish, publish_dir, style, make_default)
        return
    steps, batch_size, crop_size, lr = steps or 4000, batch_size or 8, crop_size or 256, lr or 2e-3

    import torch

    from animecli.atomic import atomic_write
    from animecli.models.spec import IMPORTED_ARCHS, Arch
    from animecli.training.distill import DistillConfig, check_output, train
    from animecli.training.export import check_model_name

    students = [a.value for a in Arch if a not in IMPORTED_ARCHS]  # the imported ones are teachers, not students
    if arch not in students:
        err.print(f"error: --arch {escape(printable(arch))}: unknown; use one of {', '.join(students)}")
        raise typer.Exit(EXIT_USAGE)
    check_output_files({"--output": output})  # now, not after hours of training
    try:
        if publish is not None:
            check_model_name(publish)
        cfg = DistillConfig(
            teacher=teacher, photos=photos, work_dir=work_dir, arch=Arch(arch), pair_size=pair_size,
            num_pairs=num_pairs, crop_size=crop_size, final_size=pair_size, final_fraction=final_fraction,
            batch_size=batch_size, steps=steps, lr=lr, photo_filter=tuple(exclude or ()),
            include=tuple(include or ()), seed=seed, threads=threads, init=init, device=device,
            precision=precision,
        )
        check_output(output, cfg)
        last = [0.0]

        def progress(stage: str, i: int, n: int, parts: dict[str, float]) -> None:
            if time.monotonic() - last[0] > 10 or i == n:
                last[0] = time.monotonic()
                figures = " ".join(f"{k}={v:.4g}" for k, v in parts.items())
                err.print(f"{stage} {i}/{n} {figures}", markup=False)

        def notice(line: str) -> None:
            err.print(f"note: {escape(printable(line))}", soft_wrap=True)

        sd = train(cfg, progress, notice)
    except AnimecliError as exc:
        raise fail(exc) from None
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        # Atomic: a failed write (disk full) must not leave a cut student where a good one was.
        atomic_write(output, lambda f: torch.save(sd, f))
    except OSError as exc:
        err.print(f"error: could not write {escape(printable(str(output)))} ({escape(str(exc.strerror or exc))}); "
                  f"the checkpoint in {escape(printable(str(work_dir)))} holds the weights: free space and rerun "
                  "the same command (it finishes at once)")
        raise typer.Exit(EXIT_FAILED) from None
    out.print(f"student written to {output}; evaluate it with `animecli eval --weights {output} --teacher {teacher}`")
    if publish:
        from animecli.training.export import export_student
        from animecli.weights.manifest import load_manifest

        try:
            earlier = load_manifest(publish_dir).models.get(publish)
        except AnimecliError:  # no manifest there yet: export starts one
            earlier = None
        try:
            entry = export_student(
                sd, publish_dir, publish, Arch(arch), style=style or f"distilled from {teacher.name}",
                source=f"animecli distill from {teacher.name} on {photos}",
                extra={"teacher": teacher.name, "training_steps": steps, "batch_size": batch_size,
                       "crop_size": crop_size, "num_pairs": num_pairs, "lr": lr},
                make_default=make_default,
            )
        except AnimecliError as exc:
            raise fail(exc) from None
        # Replacing is what the documented retrain commands rely on; say so, with what was there.
        was = (f"; it replaces the earlier {publish} ({earlier.file}, sha256 {earlier.sha256 or '?'})"
               if earlier is not None else "")
        out.print(f"published {publish} as {publish_dir / entry.file} (sha256 {entry.sha256}){was}", soft_wrap=True)


def _prune_distill(teacher: Path, photos: Path, work_dir: Path, output: Path, prune: float, stages: str,
                   steps: int, batch: int, crop: int, context: int, lr: float, prune_ends: bool, multiple: int,
                   threads: int, seed: int, publish: str | None, publish_dir: Path, style: str, make_default: bool) -> None:
    """``distill --prune``: :func:`animecli.training.prune_distill.run`, then the student's state dict
    (what ``convert --weights`` and the manifest load) written to ``output``."""
    import torch

    from animecli.atomic import atomic_write
    from animecli.models.animeganv3 import AnimeGANv3Generator
    from animecli.models.spec import Arch
    from animecli.training.export import check_model_name, export_student
    from animecli.training.prune_distill import PruneDistillConfig, load_student, run

    try:
        ratios = tuple(float(v) for v in stages.split(",")) if stages else (prune,)
    except ValueError:
        err.print(f"error: --stages {escape(printable(stages))}: use comma-separated ratios such as 0.25,0.5")
        raise typer.Exit(EXIT_USAGE) from None
    if ratios[-1] != prune or list(ratios) != sorted(set(ratios)):
        err.print(f"error: --stages {escape(printable(stages))}: increasing ratios ending at --prune {prune}")
        raise typer.Exit(EXIT_USAGE)
    check_output_files({"--output": output})
    try:
        if publish is not None:
            check_model_name(publish)
        cfg = PruneDistillConfig(teacher=teacher, photos=photos, work_dir=work_dir, ratios=ratios, steps=steps,
                                 crop=crop, context=context, batch=batch, lr=lr, keep_ends=not prune_ends,
                                 multiple=multiple, threads=threads, seed=seed)
        done = run(cfg, None, progress=lambda line: err.print(line, markup=False))
        assert done is not None  # no max_steps: it runs to the end
        student = load_student(done)
    except AnimecliError as exc:
        raise fail(exc) from None
    except ValueError as exc:
        err.print(f"error: {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    sd = {k: v.detach().float().contiguous() for k, v in student.state_dict().items()}
    try:
        atomic_write(output, lambda f: torch.save(sd, f))
    except OSError as exc:
        err.print(f"error: could not write {escape(printable(str(output)))} ({escape(str(exc.strerror or exc))}); "
                  f"{escape(printable(str(done)))} holds the student: free space and rerun the same command")
        raise typer.Exit(EXIT_FAILED) from None
    out.print(f"pruned student written to {output}; evaluate it with "
              f"`animecli eval --weights {output} --teacher {teacher}`")
    if publish:
        arch = Arch.V3 if isinstance(student, AnimeGANv3Generator) else Arch.V3_TINY
        try:
            entry = export_student(
                sd, publish_dir, publish, arch, style=style or f"{teacher.name}, {prune:.0%} pruned and distilled",
                source=f"animecli distill --prune {prune} from {teacher.name} on {photos}",
                extra={"teacher": teacher.name, "prune": prune, "stages": list(ratios), "steps_per_stage": steps,
                       "batch_size": batch, "crop_size": crop, "context": context, "lr": lr,
                       # The teacher's eps (0 in the fp16 Hayao file), so `-m NAME` runs what was trained.
                       **_norm_extra(student)},
                make_default=make_default)
        except AnimecliError as exc:
            raise fail(exc) from None
        out.print(f"published {publish} as {publish_dir / entry.file} (sha256 {entry.sha256})", soft_wrap=True)


def _norm_extra(student: object) -> dict[str, object]:
    """The manifest fields that rebuild ``student`` exactly (:meth:`ModelEntry.spec` reads them)."""
    from animecli.models.animeganv3 import AnimeGANv3Generator, AnimeGANv3TinyGenerator

    if isinstance(student, AnimeGANv3Generator):
        return {"norm_eps": student.eps, "attn_eps": student.attn_eps}
    if isinstance(student, AnimeGANv3TinyGenerator):
        return {"norm_eps": student.eps, "final_norm": student.final_norm}
    return {}


def evaluate_cmd(
    weights: Annotated[Path, typer.Option(help="Student state dict.")],
    teacher: Annotated[Path, typer.Option(help="The ONNX teacher it imitates.")],
    photos: Annotated[Path, typer.Option(help="Validation photos.")],
    size: Annotated[int, typer.Option(min=64, help="Evaluation side (the teacher's size for fixed-size teachers).")] = 512,
    sheet: Annotated[Path | None, typer.Option(help="Write a photo / teacher / student contact sheet PNG.")] = None,
    cache: Annotated[Path, typer.Option(help="Cache of teacher outputs.")] = Path(".animecli-eval-cache"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the per-photo figures as JSON.")] = None,
) -> None:
    """PSNR, SSIM and how much of the look it captures, of a student against its teacher on held-out photos.

    captured = 1 − ΣMSE(student, teacher) / ΣMSE(photo, teacher): 1 is the teacher, 0 the unchanged
    photo; the same figure for the best per-photo affine colour map says what a colour filter
    reaches; edge ratio = mean gradient magnitude of the student / of the teacher.
    """
    import json

    from animecli.atomic import atomic_write_bytes
    from animecli.options import ModelChoice
    from animecli.training.evaluate import evaluate
    from animecli.training.look import fmt
    from animecli.weights.resolve import load_generator

    check_output_files({"--sheet": sheet, "--json": json_out})
    try:
        student = load_generator(ModelChoice(weights=weights)).model
        result = evaluate(student, teacher, photos, size, cache, sheet)
    except AnimecliError as exc:
        raise fail(exc) from None
    if result is None:
        err.print(f"error: no readable photos in {photos}; pass a folder of .jpg/.png/.webp/.bmp photos")
        raise typer.Exit(EXIT_USAGE)
    for name, why in result.skipped:
        err.print(f"skipped {escape(printable(name))}: cannot be read ({escape(why)})", soft_wrap=True)
    look = result.look
    figures = (f", captured {fmt(look.captured)} (a colour filter reaches {fmt(look.colour_filter)}), "
               f"edge ratio {fmt(look.edge_ratio)}" if look is not None else "")
    out.print(f"{result.count} photos at {size}px: PSNR {result.psnr_db:.2f} dB, SSIM {result.ssim:.4f}{figures}"
              + (f" ({len(result.skipped)} unreadable skipped)" if result.skipped else ""), soft_wrap=True)
    if json_out:
        own = result.per_photo_look or (None,) * len(result.per_photo)
        atomic_write_bytes(json_out, json.dumps({
            "psnr_db": result.psnr_db, "ssim": result.ssim, "count": result.count, "size": size,
            **(look.as_dict() if look is not None else {}),
            "per_photo": [{"photo": n, "psnr_db": p, "ssim": q, **(lk.as_dict() if lk is not None else {})}
                          for (n, p, q), lk in zip(result.per_photo, own, strict=True)],
            "skipped": [{"photo": n, "reason": why} for n, why in result.skipped],
        }, indent=2).encode())

