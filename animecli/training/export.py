"""Publish a trained student into a weights folder: the file, its digest and its manifest entry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from animecli.errors import WeightsError
from animecli.models import Arch, ArchSpec, build_generator
from animecli.weights import Manifest, ModelEntry, load_manifest, save_manifest, sha256_of

NON_COMMERCIAL = (
    "non-commercial use only (research, teaching, publications), inherited from the AnimeGAN teacher; "
    "commercial use needs the AnimeGAN author's permission"
)


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
    model = build_generator(ArchSpec(arch))
    model.load_state_dict(dict(state_dict), strict=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{arch.value}.pt"
    torch.save({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, path)
    entry = ModelEntry(
        name=name, file=path.name, arch=arch, width=1.0, align_corners=False, input_multiple=4,
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
