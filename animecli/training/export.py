"""Publish a trained student into a weights folder: the file, its digest and its manifest entry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from animecli.atomic import atomic_write
from animecli.errors import UsageError, WeightsError
from animecli.models.registry import build_generator, fit_widths
from animecli.models.spec import Arch, ArchSpec, describe
from animecli.weights.manifest import Manifest, ModelEntry, load_manifest, save_manifest, sha256_of

NON_COMMERCIAL = (
    "non-commercial use only (research, teaching, publications), inherited from the AnimeGAN teacher; "
    "commercial use needs the AnimeGAN author's permission"
)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_model_name(name: str) -> None:
    """Refuse a ``--publish`` name that is not a plain model name.

    The name becomes a file name in the weights folder: ``../x`` wrote outside it.

    Raises:
        UsageError: naming what is allowed.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"--publish {name!r}: a model name is letters, digits, '_', '-' and '.', "
                         "starting with a letter or digit (e.g. hayao2)")


def export_student(
    state_dict: Mapping[str, torch.Tensor],
    folder: Path,
    name: str,
    arch: Arch,
    style: str,
    source: str,
    extra: Mapping[str, Any],
    make_default: bool = False,
) -> ModelEntry:
    """Save ``state_dict`` as ``folder/<name>_<arch>.pt`` and add or replace its manifest entry.

    The state dict is loaded strictly into a fresh generator first, so a file
    that would not load is never published.
    """
    check_model_name(name)
    # The spec distill trained with: the manifest entry must say the same, or a v2 student would
    # run with the other upsampling mode (align_corners) than it learnt, and look worse than eval says.
    # A pruned AnimeGANv3 has its own layer widths: read from the weights, as loading does.
    spec = fit_widths(ArchSpec(arch), state_dict)
    model = build_generator(spec)
    model.load_state_dict(dict(state_dict), strict=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{arch.value}.pt"
    weights = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: torch.save(weights, f))
    entry = ModelEntry(
        name=name, file=path.name, arch=arch, width=spec.width, align_corners=spec.align_corners,
        input_multiple=describe(arch).size_multiple,
        sha256=sha256_of(path), size=path.stat().st_size,
        parameters=sum(p.numel() for p in model.parameters()),
        style=style, licence=NON_COMMERCIAL, source=source, extra=dict(extra),
    )
    try:
        manifest = load_manifest(folder)
    except WeightsError:  # a first export starts an empty manifest
        manifest = Manifest(default=name, models={})
    models = dict(manifest.models)
    models[name] = entry
    save_manifest(Manifest(default=name if make_default else manifest.default, models=models), folder)
    return entry
