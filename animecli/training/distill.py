# Over 400 lines: one training loop with its pair cache and checkpoint checks; to split (pairs, photos) later.
"""Train a student generator to imitate an ONNX teacher.

Three stages, each resumable:

1. **Cache** — random crops of training photos are run through the teacher
   once and stored as uint8 (input, target) pairs, so later epochs and reruns
   never pay for the teacher again.
2. **Train** — the student learns on random sub-crops of those pairs, with
   L1 + SSIM + Sobel-edge loss, AdamW and a cosine schedule. The last part of
   training uses whole pairs (``final_size``) so that the generator's
   whole-image normalisation sees the statistics it will see in use.
3. **Export** — the float32 state dict, ready for ``--weights`` or the manifest.

Checkpoints are written every ``checkpoint_every`` steps; rerunning the same
command continues from the last one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps

from animecli.atomic import atomic_write, atomic_write_bytes, file_in_the_way
from animecli.errors import UsageError, first_line
from animecli.inference.device import resolve_device
from animecli.io.photos import is_photo
from animecli.models.registry import build_generator, convert_layout, detect_arch
from animecli.models.spec import Arch, ArchSpec
from animecli.options import Precision
from animecli.training.fold import fold_lite2_into_lite3
from animecli.training.losses import distill_loss
from animecli.training.teachers import OnnxTeacher

# Cached photos whose statistics fold a lite2 student into a lite3 one (see animecli.training.fold).
FOLD_PHOTOS = 64


@dataclass(frozen=True)
class DistillConfig:
    """Everything one distillation run needs.

    Attributes:
        teacher: the ONNX teacher file.
        photos: folder of training photos.
        work_dir: cache of teacher outputs and checkpoints.
        arch: student architecture.
        pair_size: side of the square (input, teacher output) pairs cached.
        num_pairs: how many pairs to cache.
        crop_size: side of the random crops used for most of training.
        final_size: side of the crops for the last ``final_fraction`` of steps.
        final_fraction: share of steps trained at ``final_size``.
        batch_size: crops per step (halved in the final stage, for memory).
        steps: optimiser steps in all.
        lr: peak AdamW learning rate.
        photo_filter: keep photos whose name contains none of these words
            (e.g. ``("face",)`` for landscape styles), or only those
            containing ``include`` if given.
        include: see ``photo_filter``.
        seed: seeds crops, order and initialisation.
        threads: torch and onnxruntime threads (0 = all cores).
        checkpoint_every: steps between checkpoints.
        device: ``auto`` (the first CUDA GPU if there is one, else the CPU), ``cpu``,
            ``cuda`` or ``cuda:N``; asking for CUDA without one is an error, never a silent
            CPU run. The teacher cache is built by onnxruntime on the CPU either way.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32`` or ``bf16``: bf16 runs the
            student's forward pass under bfloat16 autocast (weights, optimiser and loss stay
            float32; the norms' statistics too). On CPUs with AMX it is faster as well.
        init: start from this state dict (e.g. another style's student: styles
            share most of what a generator must learn). Keys the architecture
            has and the file lacks keep their fresh initialisation; any other
            mismatch is an error. Ignored when resuming from a checkpoint.
            A ``lite`` or ``lite2`` student starting a ``lite3`` one has its
            extra norms folded into its convolutions first.
    """

    teacher: Path
    photos: Path
    work_dir: Path
    arch: Arch = Arch.LITE
    pair_size: int = 512
    num_pairs: int = 400
    crop_size: int = 256
    final_size: int = 512
    final_fraction: float = 0.2
    batch_size: int = 8
    steps: int = 4000
    lr: float = 2e-3
    photo_filter: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 100
    init: Path | None = None
    device: str = "auto"
    precision: Precision = Precision.AUTO
    log: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def cache_dir(self) -> Path:
        """Where the teacher pairs are cached (``WORK/cache``)."""
        return self.work_dir / "cache"

    @property
    def checkpoint(self) -> Path:
        """The resumable checkpoint (``WORK/checkpoint.pt``)."""
        return self.work_dir / "checkpoint.pt"


ProgressFn = Callable[[str, int, int, dict[str, float]], None]


def list_photos(cfg: DistillConfig) -> list[Path]:
    """Training photos, sorted, after the name filters.

    Raises:
        UsageError: ``photos`` is missing or not a folder.
    """
    if not cfg.photos.exists():
        raise UsageError(f"--photos {cfg.photos} does not exist; pass the folder of training photos")
    if not cfg.photos.is_dir():
        raise UsageError(f"--photos {cfg.photos} is a file; pass the folder that holds the training photos")
    out = []
    for p in sorted(cfg.photos.iterdir()):
        if not is_photo(p):
            continue
        name = p.name.lower()
        if cfg.include and not any(w in name for w in cfg.include):
            continue
        if any(w in name for w in cfg.photo_filter):
            continue
        out.append(p)
    return out


def random_square(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A random size×size crop after a random rescale (short side 1.0–1.5× size) and flip."""
    img = ImageOps.exif_transpose(img).convert("RGB")
    short = min(img.size)
    target_short = int(size * rng.uniform(1.0, 1.5))
    scale = target_short / short
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    x0, y0 = rng.randint(0, w - size), rng.randint(0, h - size)
    img = img.crop((x0, y0, x0 + size, y0 + size))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → (3, H, W) uint8."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3).permute(2, 0, 1)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (…, 3, H, W) → float32 in [-1, 1]."""
    return x.float() / 127.5 - 1.0


NoticeFn = Callable[[str], None]


def _save(dest: Path, obj: object) -> None:
    """``torch.save`` atomically: Ctrl-C or a full disk mid-write leaves the old file, not a cut one."""
    atomic_write(dest, lambda f: torch.save(obj, f))


def _photo_list_digest(photos: list[Path]) -> str:
    return hashlib.sha256("\n".join(p.name for p in photos).encode()).hexdigest()[:16]


def _check_cache_settings(cfg: DistillConfig, cache: Path, teacher: OnnxTeacher, photos: list[Path]) -> None:
    """Refuse a work dir whose cached pairs came from other data; record the data of a new one.

    A resumed run used to train on the old pairs silently (another teacher, other photos),
    or to mix pair sizes and fail later.

    Raises:
        UsageError: naming each option that differs and the fix.
    """
    meta = {"teacher": teacher.path.name, "teacher_sha256": teacher.sha256, "pair_size": cfg.pair_size,
            "seed": cfg.seed, "photos": _photo_list_digest(photos)}
    path = cache / "settings.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        atomic_write_bytes(path, json.dumps(meta, indent=1).encode())
        return
    except (OSError, ValueError):
        old = {}
    names = {"teacher_sha256": f"--teacher (the cache was made by {old.get('teacher', '?')})",
             "pair_size": f"--pair-size (the cache holds {old.get('pair_size', '?')})",
             "seed": f"--seed (the cache used {old.get('seed', '?')})",
             "photos": "--photos / --include / --exclude (the cache came from another set of photos)"}
    differ = [label for key, label in names.items() if old.get(key) != meta[key]]
    if differ:
        raise UsageError(f"--work-dir {cfg.work_dir} holds teacher pairs made with other settings: "
                         f"{'; '.join(differ)}; use a new --work-dir for these, or rerun with the old ones")


def build_cache(cfg: DistillConfig, progress: ProgressFn | None = None, notice: NoticeFn | None = None) -> Path:
    """Run the teacher on ``num_pairs`` random crops; skip pairs already cached.

    Photos that cannot be read are skipped with a notice (another photo is drawn).

    Returns:
        The cache folder, holding ``pair_NNNNN.pt`` files of ``{"x", "y"}``
        uint8 (3, S, S) tensors.

    Raises:
        UsageError: no readable training photos; a teacher that does not load or does not
            take ``pair_size``; a work dir whose pairs came from other settings.
    """
    photos = list_photos(cfg)
    if not photos:
        raise UsageError(f"no training photos in {cfg.photos} (after --include/--exclude); pass a folder "
                         f"of .jpg/.png/.webp/.bmp photos or change the filters")
    teacher = OnnxTeacher(cfg.teacher, cfg.threads)
    teacher.check_size(cfg.pair_size, "--pair-size")
    cache = cfg.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    _check_cache_settings(cfg, cache, teacher, photos)
    readable = list(photos)
    for i in range(cfg.num_pairs):
        dest = cache / f"pair_{i:05d}.pt"
        if dest.exists():
            continue
        rng = random.Random(cfg.seed * 1_000_003 + i)  # pair i is the same on every rerun
        while True:
            if not readable:
                raise UsageError(f"none of the photos in {cfg.photos} could be read; pass a folder of photos")
            photo = readable[rng.randrange(len(readable))]
            try:
                with Image.open(photo) as im:
                    crop = random_square(im, cfg.pair_size, rng)
                break
            except (OSError, ValueError, Image.DecompressionBombError) as exc:  # corrupt, truncated, not an image
                readable.remove(photo)
                if notice:
                    why = first_line(exc, 120)
                    notice(f"skipped {photo}: cannot be read ({why})")
        x = to_tensor(crop)
        y = teacher(to_unit(x).unsqueeze(0))[0]
        yq = ((y + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        _save(dest, {"x": x.clone(), "y": yq})
        if progress:
            progress("cache", i + 1, cfg.num_pairs, {})
    return cache


def load_pairs(cache: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All cached pairs as two uint8 (P, 3, S, S) tensors.

    Raises:
        DamagedPairs: some pair files could not be read (they are deleted, so that
            :func:`build_cache` makes them again).
    """
    xs, ys, damaged = [], [], []
    for i in range(count):
        path = cache / f"pair_{i:05d}.pt"
        try:
            d = torch.load(path, weights_only=True)
            xs.append(d["x"])
            ys.append(d["y"])
        except Exception:
            damaged.append(path)
    if damaged:
        for path in damaged:
            path.unlink(missing_ok=True)
        raise DamagedPairs(damaged)
    return torch.stack(xs), torch.stack(ys)


class DamagedPairs(Exception):
    """Cached pairs that could not be read (deleted already)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__(f"{len(paths)} damaged cached pair(s), first {paths[0]}")
        self.paths = paths


def batches(
    xs: torch.Tensor, ys: torch.Tensor, size: int, batch: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random (input, target) batches of size×size crops, in [-1, 1]."""
    p, _, s, _ = xs.shape
    while True:
        idx = torch.randint(0, p, (batch,), generator=gen)
        x0 = torch.randint(0, s - size + 1, (batch,), generator=gen)
        y0 = torch.randint(0, s - size + 1, (batch,), generator=gen)
        xb = torch.stack([xs[i, :, a : a + size, b : b + size] for i, a, b in zip(idx, y0, x0, strict=False)])
        yb = torch.stack([ys[i, :, a : a + size, b : b + size] for i, a, b in zip(idx, y0, x0, strict=False)])
        yield to_unit(xb), to_unit(yb)


def training_precision(precision: Precision, device: torch.device) -> bool:
    """Whether to train under bfloat16 autocast (``auto``: on CUDA only).

    Raises:
        UsageError: fp16 (it would need loss scaling; bf16 does not).
    """
    if precision is Precision.FP16:
        raise UsageError("distill trains in fp32 or bf16 (fp16 would need loss scaling); use --precision bf16")
    if precision is Precision.AUTO:
        return device.type == "cuda"
    return precision is Precision.BF16


def check_options(cfg: DistillConfig) -> None:
    """What can be refused before any photo, teacher or checkpoint is read.

    Raises:
        UsageError: a learning rate that is not a number ≥ 0, crops larger than the pairs,
            a work dir or ``--init`` path that cannot be used.
    """
    if not math.isfinite(cfg.lr) or cfg.lr < 0:
        raise UsageError(f"--lr {cfg.lr}: the learning rate must be a number ≥ 0 (e.g. 2e-3)")
    if cfg.crop_size > cfg.pair_size or cfg.final_size > cfg.pair_size:
        raise UsageError(f"--crop-size {max(cfg.crop_size, cfg.final_size)} is larger than the cached pairs "
                         f"(--pair-size {cfg.pair_size}); use a crop size of at most {cfg.pair_size}")
    blocker = file_in_the_way(cfg.cache_dir)
    if blocker is not None:
        raise UsageError(f"--work-dir {cfg.work_dir}: {blocker} is a file, not a folder; choose another --work-dir")
    if cfg.init is not None and not cfg.init.is_file():
        what = "is a folder" if cfg.init.is_dir() else "does not exist"
        raise UsageError(f"--init {cfg.init} {what}; pass a student's .pt state dict")


def check_output(output: Path, cfg: DistillConfig) -> None:
    """Refuse an ``--output`` that would overwrite what training reads or keeps.

    The student is written there after training; a path that is the teacher, a photo, the
    checkpoint or a cached pair would be replaced by it, losing the file (and, for the
    checkpoint, the training).

    Raises:
        UsageError: not a ``.pt``/``.pth`` name, the teacher itself, or a file distill keeps
            in ``--work-dir``.
    """
    if output.suffix.lower() not in (".pt", ".pth"):
        raise UsageError(f"--output {output}: the student is a PyTorch state dict; give a file name ending in "
                         ".pt (e.g. runs/hayao/student.pt)")
    real = os.path.realpath(output)
    if real == os.path.realpath(cfg.teacher):
        raise UsageError(f"--output {output} is the --teacher; give another file name for the student")
    if real == os.path.realpath(cfg.checkpoint) or real.startswith(os.path.realpath(cfg.cache_dir) + os.sep):
        raise UsageError(f"--output {output}: distill keeps its checkpoint and cached pairs there; give another "
                         f"file, e.g. {cfg.work_dir / 'student.pt'}")


def _load_init(cfg: DistillConfig) -> dict[str, torch.Tensor]:
    assert cfg.init is not None
    try:
        sd = torch.load(cfg.init, weights_only=True, map_location="cpu")
    except Exception as exc:
        first = first_line(exc, 120)
        raise UsageError(f"--init {cfg.init}: not a readable PyTorch state dict ({first}); "
                         "pass a student's .pt file") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UsageError(f"--init {cfg.init}: not a state dict of tensors; pass a student's .pt file")
    return sd


def _load_checkpoint(ckpt: Path, cfg: DistillConfig, device: torch.device) -> dict[str, object]:
    try:
        # map_location: a checkpoint written on a GPU resumes on a CPU and the other way round.
        state = torch.load(ckpt, weights_only=True, map_location=device)
    except Exception as exc:
        problem = f"cannot be read: {first_line(exc, 120)}"
    else:
        if not isinstance(state, dict):
            problem = f"holds a {type(state).__name__}, not a distill checkpoint"
        else:
            missing = [key for key in ("step", "model", "opt") if key not in state]
            problem = f"not a distill checkpoint: no {', '.join(missing)}" if missing else ""
            if not problem and not isinstance(state["step"], int):
                problem = f"its step is {state['step']!r}, not a number"
    if problem:
        raise UsageError(f"{ckpt} is damaged ({problem}); delete it to train again from step 0 "
                         "(the cached teacher pairs are kept)")
    assert isinstance(state, dict)  # checked above
    config = state.get("config")
    was = config.get("arch") if isinstance(config, dict) else None
    if was is not None and was not in (cfg.arch.value, str(cfg.arch)):
        was = str(was).removeprefix("Arch.").lower()
        raise UsageError(f"{ckpt} holds a {was} student, not {cfg.arch.value}; rerun with --arch {was}, "
                         "or use a new --work-dir")
    return state


def train(
    cfg: DistillConfig, progress: ProgressFn | None = None, notice: NoticeFn | None = None,
) -> dict[str, torch.Tensor]:
    """Train (or resume) the student on ``cfg.device``; return its float32 state dict (on the CPU).

    Ctrl-C (KeyboardInterrupt) writes a checkpoint at the current step before it propagates,
    so a rerun resumes there.

    Raises:
        SetupError: CUDA asked for and not usable; UsageError: a bad device, fp16, or any
            option, file or work dir that cannot be used (one line, with the fix).
    """
    device = resolve_device(cfg.device)
    bf16 = training_precision(cfg.precision, device)
    check_options(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ckpt = cfg.checkpoint
    state = _load_checkpoint(ckpt, cfg, device) if ckpt.exists() else None
    init_sd: Mapping[str, torch.Tensor] | None = _load_init(cfg) if cfg.init is not None and state is None else None
    if cfg.init is not None and state is not None and notice:
        notice(f"resuming from {ckpt} (step {state['step']}): --init {cfg.init} is not used")
    cache = build_cache(cfg, progress, notice)
    try:
        xs, ys = load_pairs(cache, cfg.num_pairs)
    except DamagedPairs as damaged:
        if notice:
            notice(f"{len(damaged.paths)} cached pair(s) could not be read (first {damaged.paths[0]}); made again")
        build_cache(cfg, progress, notice)
        xs, ys = load_pairs(cache, cfg.num_pairs)
    model = build_generator(ArchSpec(cfg.arch)).train()
    step = 0
    if init_sd is not None:
        found = detect_arch(init_sd)
        if cfg.arch is Arch.LITE3 and found is not None and found[0] in (Arch.LITE, Arch.LITE2):
            # lite3 = lite2 with most norms left out: fold them, at the typical statistics of
            # the cached photos, into the convolutions before them.
            init_sd = fold_lite2_into_lite3(convert_layout(init_sd, Arch.LITE2), to_unit(xs[:FOLD_PHOTOS]))
        # lite and lite2 have the same layers (lite2 runs one at half resolution): either starts the other.
        init_sd = convert_layout(init_sd, cfg.arch)
        width = f" of width {found[1]:g}" if found is not None and found[1] != 1.0 else ""
        kind = f" (it is a {found[0].value} student{width})" if found is not None else ""
        try:
            missing, unexpected = model.load_state_dict(init_sd, strict=False)
        except RuntimeError:  # same names, other shapes (another arch or width)
            raise UsageError(f"--init {cfg.init} does not fit a {cfg.arch.value} student{kind}; pass --arch to "
                             "match it, or another --init") from None
        if unexpected:
            raise UsageError(f"--init {cfg.init}: keys the {cfg.arch.value} student does not have{kind}: "
                             f"{unexpected[:5]}; pass --arch to match it")
        if len(missing) > len(model.state_dict()) // 2:
            raise UsageError(f"--init {cfg.init}: not a {cfg.arch.value} state dict{kind} (missing {missing[:5]} …); "
                             "pass --arch to match it")
    model.to(device)
    # The optimiser is made after the move so that its state lives beside the weights.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    if state is not None:
        try:
            model.load_state_dict(state["model"], strict=True)  # type: ignore[arg-type]
            opt.load_state_dict(state["opt"])  # type: ignore[arg-type]
        except (RuntimeError, ValueError, KeyError) as exc:
            why = first_line(exc, 120)
            raise UsageError(f"{ckpt} does not fit a {cfg.arch.value} student ({why}); rerun with its --arch, "
                             "or use a new --work-dir") from None
        step = int(state["step"])  # type: ignore[call-overload]
    final_start = int(cfg.steps * (1.0 - cfg.final_fraction))
    gen = torch.Generator().manual_seed(cfg.seed + step)
    stream = batches(xs, ys, cfg.crop_size, cfg.batch_size, gen)
    final_stream = batches(xs, ys, cfg.final_size, max(1, cfg.batch_size // 4), gen)
    t0, first = time.perf_counter(), step

    def save() -> None:
        snapshot = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "config": {k: str(v) for k, v in asdict(cfg).items() if k != "log"}}
        _save(ckpt, snapshot)

    try:
        while step < cfg.steps:
            lr = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = next(final_stream if step >= final_start else stream)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
            loss, parts = distill_loss(out.float(), y)  # the loss (SSIM's small differences) in float32
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            if progress:
                # Seconds per step of this process only: a resumed run must not count the steps it did not do.
                parts.update(loss=float(loss.detach()), lr=lr, s_per_step=(time.perf_counter() - t0) / (step - first))
                progress("train", step, cfg.steps, parts)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save()
    except KeyboardInterrupt:
        # Up to checkpoint_every steps would otherwise be lost. A step interrupted half-way was
        # not counted; the weights may hold its update, which only matters to exact replays.
        if step > first and step % cfg.checkpoint_every:
            save()
            if notice:
                notice(f"interrupted at step {step}: checkpoint written; rerun the same command to resume")
        raise
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
