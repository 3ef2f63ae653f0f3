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

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps

from animecli.config import Precision
from animecli.engine import resolve_device
from animecli.errors import UsageError
from animecli.models import Arch, ArchSpec, build_generator, convert_layout, detect_arch
from animecli.training.fold import fold_lite2_into_lite3
from animecli.training.losses import distill_loss
from animecli.training.teachers import OnnxTeacher

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
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


ProgressFn = Callable[[str, int, int, dict[str, float]], None]


def list_photos(cfg: DistillConfig) -> list[Path]:
    """Training photos, sorted, after the name filters."""
    out = []
    for p in sorted(cfg.photos.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
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


def build_cache(cfg: DistillConfig, progress: ProgressFn | None = None) -> Path:
    """Run the teacher on ``num_pairs`` random crops; skip pairs already cached.

    Returns:
        The cache folder, holding ``pair_NNNNN.pt`` files of ``{"x", "y"}``
        uint8 (3, S, S) tensors.
    """
    cache = cfg.work_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    photos = list_photos(cfg)
    if not photos:
        raise FileNotFoundError(f"{cfg.photos}: no training photos after filtering")
    teacher = OnnxTeacher(cfg.teacher, cfg.threads)
    if teacher.info.fixed_size and teacher.info.fixed_size != (cfg.pair_size, cfg.pair_size):
        raise ValueError(f"{cfg.teacher.name} takes only {teacher.info.fixed_size}; set pair_size to match")
    for i in range(cfg.num_pairs):
        dest = cache / f"pair_{i:05d}.pt"
        if dest.exists():
            continue
        rng = random.Random(cfg.seed * 1_000_003 + i)  # pair i is the same on every rerun
        with Image.open(photos[rng.randrange(len(photos))]) as im:
            crop = random_square(im, cfg.pair_size, rng)
        x = to_tensor(crop)
        y = teacher(to_unit(x).unsqueeze(0))[0]
        yq = ((y + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        tmp = dest.with_suffix(".tmp")
        torch.save({"x": x.clone(), "y": yq}, tmp)
        tmp.replace(dest)
        if progress:
            progress("cache", i + 1, cfg.num_pairs, {})
    return cache


def load_pairs(cache: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All cached pairs as two uint8 (P, 3, S, S) tensors."""
    xs, ys = [], []
    for i in range(count):
        d = torch.load(cache / f"pair_{i:05d}.pt", weights_only=True)
        xs.append(d["x"])
        ys.append(d["y"])
    return torch.stack(xs), torch.stack(ys)


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


def train(cfg: DistillConfig, progress: ProgressFn | None = None) -> dict[str, torch.Tensor]:
    """Train (or resume) the student on ``cfg.device``; return its float32 state dict (on the CPU).

    Raises:
        SetupError: CUDA asked for and not usable; UsageError: a bad device or fp16.
    """
    device = resolve_device(cfg.device)
    bf16 = training_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cache = build_cache(cfg, progress)
    xs, ys = load_pairs(cache, cfg.num_pairs)
    model = build_generator(ArchSpec(cfg.arch)).train()
    ckpt = cfg.work_dir / "checkpoint.pt"
    step = 0
    if cfg.init is not None and not ckpt.exists():
        init_sd = torch.load(cfg.init, weights_only=True)
        found = detect_arch(init_sd)
        if cfg.arch is Arch.LITE3 and found is not None and found[0] in (Arch.LITE, Arch.LITE2):
            # lite3 = lite2 with most norms left out: fold them, at the typical statistics of
            # the cached photos, into the convolutions before them.
            init_sd = fold_lite2_into_lite3(convert_layout(init_sd, Arch.LITE2), to_unit(xs[:FOLD_PHOTOS]))
        # lite and lite2 have the same layers (lite2 runs one at half resolution): either starts the other.
        init_sd = convert_layout(init_sd, cfg.arch)
        missing, unexpected = model.load_state_dict(init_sd, strict=False)
        if unexpected:
            raise ValueError(f"{cfg.init}: keys the {cfg.arch.value} student does not have: {unexpected[:5]}")
        if len(missing) > len(model.state_dict()) // 2:
            raise ValueError(f"{cfg.init}: not a {cfg.arch.value} state dict (missing {missing[:5]} …)")
    model.to(device)
    # The optimiser is made after the move so that its state lives beside the weights.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    if ckpt.exists():
        # map_location: a checkpoint written on a GPU resumes on a CPU and the other way round.
        state = torch.load(ckpt, weights_only=True, map_location=device)
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
    final_start = int(cfg.steps * (1.0 - cfg.final_fraction))
    gen = torch.Generator().manual_seed(cfg.seed + step)
    stream = batches(xs, ys, cfg.crop_size, cfg.batch_size, gen)
    final_stream = batches(xs, ys, cfg.final_size, max(1, cfg.batch_size // 4), gen)
    t0, first = time.perf_counter(), step
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
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "config": {k: str(v) for k, v in asdict(cfg).items() if k != "log"}}, tmp)
            tmp.replace(ckpt)
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
