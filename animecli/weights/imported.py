"""ONNX generator files as models: imported once onto our modules, checked once against onnxruntime,
and remembered by the file's SHA-256 (``<cache dir>/imported/``), so later runs read a state dict.

``animecli convert --weights FILE.onnx``, ``animecli models add FILE.onnx`` and pulled ``.onnx``
manifest entries all come here. The importer (:mod:`animecli.weights.onnx_import`) needs the
``onnx`` package, an optional extra: it is imported only when a file is not in the cache yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from animecli.atomic import atomic_write_bytes
from animecli.dirs import cache_dir
from animecli.errors import SetupError, WeightsError
from animecli.models.spec import NON_COMMERCIAL, Arch, ArchSpec
from animecli.weights.download import sha256_file

if TYPE_CHECKING:
    import torch

# Bumped when the importer's mapping changes: older cached imports are redone.
IMPORT_VERSION = 1
ONNX_EXTRA = "pip install 'animecli[onnx]'"
# The import must reproduce the file this closely on the check image (its float graph for 8-bit
# QDQ files, whose quantised activations our float module leaves out; measured: 90+ dB on the
# generated graphs, 49-70 dB on the real files at 256², where fp16 weights and reduction order differ).
CHECK_MIN_DB = 40.0
# Side of the check image for size-free files (a multiple of 16, the tiny generators' multiple).
CHECK_SIDE = 256


def is_onnx_file(path: Path) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix; its bytes are checked on import)."""
    return path.suffix.lower() == ".onnx"


@dataclass(frozen=True)
class ImportedModel:
    """What an imported ONNX file became.

    Attributes:
        spec: our architecture and its options (eps read from the file).
        state_dict_path: the cached state dict (float32), loaded with the one safe loader.
        size_multiple: input H and W must be multiples of this (from the graph).
        fixed_size: (H, W) the file itself was limited to, or ``None``.
        layout, input_name, output_name: the file's.
        quantized: the file stores 8-bit (QDQ) weights and activations.
        sha256: the ONNX file's digest.
        check_db: PSNR of our module against onnxruntime on the file when imported (``None``:
            onnxruntime was not installed, not checked).
        licence: the weights' licence (the AnimeGAN author's: non-commercial).
    """

    spec: ArchSpec
    state_dict_path: Path
    size_multiple: int
    fixed_size: tuple[int, int] | None
    layout: str
    input_name: str
    output_name: str
    quantized: bool
    sha256: str
    check_db: float | None
    licence: str = NON_COMMERCIAL

    def to_json(self) -> dict[str, Any]:
        """The cache record (beside the state dict)."""
        s = self.spec
        return {
            "version": IMPORT_VERSION, "arch": s.arch.value, "width": s.width, "norm_eps": s.norm_eps,
            "attn_eps": s.attn_eps, "final_norm": s.final_norm, "size_multiple": self.size_multiple,
            "fixed_size": list(self.fixed_size) if self.fixed_size else None, "layout": self.layout,
            "input_name": self.input_name, "output_name": self.output_name, "quantized": self.quantized,
            "sha256": self.sha256, "check_db": self.check_db, "licence": self.licence,
        }


def imported_dir() -> Path:
    """Where imported files are cached: ``<cache dir>/imported``."""
    return cache_dir() / "imported"


def _record_path(digest: str) -> Path:
    return imported_dir() / f"{digest}.json"


def spec_from_record(data: dict[str, Any]) -> ArchSpec:
    """The :class:`ArchSpec` a cache record (or a manifest entry's fields) describes."""
    eps, attn = data.get("norm_eps"), data.get("attn_eps")
    return ArchSpec(Arch(data["arch"]), float(data.get("width", 1.0)), align_corners=False,
                    norm_eps=None if eps is None else float(eps), attn_eps=None if attn is None else float(attn),
                    final_norm=bool(data.get("final_norm", True)))


def cached_import(digest: str) -> ImportedModel | None:
    """The cached import of the file with this SHA-256, or ``None`` (no torch, no onnx needed)."""
    record = _record_path(digest)
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        if data.get("version") != IMPORT_VERSION or data.get("sha256") != digest:
            return None
        sd_path = record.with_suffix(".pt")
        if not sd_path.is_file():
            return None
        fixed = data.get("fixed_size")
        return ImportedModel(
            spec=spec_from_record(data), state_dict_path=sd_path, size_multiple=int(data["size_multiple"]),
            fixed_size=(int(fixed[0]), int(fixed[1])) if fixed else None, layout=str(data["layout"]),
            input_name=str(data["input_name"]), output_name=str(data["output_name"]),
            quantized=bool(data["quantized"]), sha256=digest,
            check_db=None if data.get("check_db") is None else float(data["check_db"]),
            licence=str(data.get("licence", NON_COMMERCIAL)),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # absent or damaged: imported again


def _eps_of(module: Any) -> tuple[float | None, float | None, bool]:
    """(norm eps, attention eps, tiny's final LADE) of an imported module, read from its layers."""
    from torch import nn

    from animecli.models.animeganv3 import LADE, AnimeGANv3TinyGenerator, ExternalAttention
    from animecli.models.norm import FastGroupNorm

    norm_eps = attn_eps = None
    for m in module.modules():
        if norm_eps is None and isinstance(m, (LADE, FastGroupNorm, nn.GroupNorm)):
            norm_eps = float(m.eps)
        if attn_eps is None and isinstance(m, ExternalAttention):
            attn_eps = float(m.eps)
    final = True
    if isinstance(module, AnimeGANv3TinyGenerator):
        last = module.dec[len(module.dec) - 1]
        final = isinstance(last, nn.Sequential) and isinstance(last[2], LADE)
    return norm_eps, attn_eps, final


def import_file(path: Path, digest: str | None = None, check: bool = True) -> ImportedModel:
    """The import of ``path``: from the cache if this file (by SHA-256) was imported before, else
    imported now, checked against onnxruntime once (if installed), and cached.

    Args:
        path: an ONNX generator file.
        digest: its SHA-256 if already computed.
        check: compare with onnxruntime on a first import (when onnxruntime is installed).

    Raises:
        SetupError: the ``onnx`` package is not installed (one line naming the extra).
        WeightsError: not an ONNX generator animecli supports, or its import does not reproduce
            the file (one line naming the file); nothing is cached then.
    """
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; check the path")
    digest = digest or sha256_file(path)
    found = cached_import(digest)
    if found is not None:
        return found
    import importlib

    try:
        onnx_import = importlib.import_module("animecli.weights.onnx_import")
    except ImportError as exc:
        raise SetupError(f"{path}: reading an ONNX file needs the onnx package ({exc.name} is not installed); "
                         f"{ONNX_EXTRA}") from None
    import torch

    g = onnx_import.import_onnx(path)
    check_db: float | None = None
    if check and _onnxruntime_installed():
        size = g.fixed_size or (CHECK_SIDE, CHECK_SIDE)
        try:
            check_db = onnx_import.check_against_onnxruntime(path, g.module, size, g.layout,
                                                             float_activations=g.quantized)
        except Exception as exc:  # onnxruntime refusing the file is a file problem, said in one line
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{path}: onnxruntime cannot run the file to check the import ({first})") from None
        if not check_db >= CHECK_MIN_DB:
            raise WeightsError(
                f"{path}: the imported {g.arch.value} generator does not reproduce the file "
                f"({check_db:.1f} dB against onnxruntime, {CHECK_MIN_DB:.0f} dB needed); it is not supported"
            )
    arch = g.arch
    sd = g.module.state_dict()
    # The first conv's output channels: 32 × width (v3, v2-tf) or 16 × width (tiny).
    if arch is Arch.V2_TF:
        width = int(sd["block_a.0.1.weight"].shape[0]) / 32.0
    else:
        width = int(sd["enc.0.1.weight"].shape[0]) / (16.0 if arch is Arch.V3_TINY else 32.0)
    norm_eps, attn_eps, final = _eps_of(g.module)
    spec = ArchSpec(arch, width, align_corners=False, norm_eps=norm_eps, attn_eps=attn_eps, final_norm=final)
    folder = imported_dir()
    sd_path = folder / f"{digest}.pt"
    result = ImportedModel(spec, sd_path, g.size_multiple, g.fixed_size, str(g.layout.value), g.input_name,
                           g.output_name, g.quantized, digest, check_db)
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().float().contiguous() for k, v in g.module.state_dict().items()}, buf)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(sd_path, buf.getvalue())
        atomic_write_bytes(_record_path(digest), (json.dumps(result.to_json(), indent=2) + "\n").encode())
    except OSError as exc:
        # The run can go on from memory; the next one imports again.
        raise WeightsError(f"{folder}: cannot cache the imported model ({exc.strerror or exc}); "
                           "make it writable or set ANIMECLI_HOME to a writable folder") from None
    return result


def _onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def load_imported(found: ImportedModel, fast_norm: bool = True) -> torch.nn.Module:
    """Our module with the imported weights (the one safe loader, ``strict=True``)."""
    from dataclasses import replace

    from animecli.weights.checkpoint import build_and_load, read_state_dict

    spec = replace(found.spec, fast_norm=fast_norm)
    return build_and_load(spec, read_state_dict(found.state_dict_path), str(found.state_dict_path))


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def register_onnx(path: Path, name: str) -> tuple[Any, ImportedModel]:
    """``animecli models add``: import ``path`` (once), and register it as model ``name`` in
    ``<cache dir>/models``: its state dict (converted once, with its SHA-256) and a manifest entry.

    Returns:
        (the new :class:`~animecli.weights.manifest.ModelEntry`, the import).

    Raises:
        UsageError: ``name`` is not a plain model name, or is a shipped model's.
        SetupError, WeightsError: as :func:`import_file`; nothing is registered then.
    """
    import shutil

    from animecli.errors import UsageError
    from animecli.weights.manifest import (
        Manifest,
        ModelEntry,
        _load_manifest,
        load_user_manifest,
        save_manifest,
        user_models_dir,
    )

    if not name or not set(name) <= _NAME_CHARS or not name[0].isalnum() or ".." in name:
        raise UsageError(f"--name {name!r}: a model name is letters, digits, '_', '-' and '.', "
                         "starting with a letter or digit (e.g. hayao36)")
    shipped = _load_manifest()
    if name in shipped.models:
        raise UsageError(f"--name {name}: a shipped model has that name; choose another")
    found = import_file(path)
    folder = user_models_dir()
    target = folder / f"{name}.pt"
    user = load_user_manifest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(found.state_dict_path, tmp)
        tmp.replace(target)
    except OSError as exc:
        raise WeightsError(f"{folder}: cannot register the model ({exc.strerror or exc}); "
                           "make it writable or set ANIMECLI_HOME") from None
    s = found.spec
    params = _parameters(found.state_dict_path)
    entry = ModelEntry(
        name=name, file=target.name, arch=s.arch, width=s.width, align_corners=False,
        input_multiple=found.size_multiple, sha256=sha256_file(target), size=target.stat().st_size,
        parameters=params, style=f"imported from {path.name}", licence=found.licence,
        source=f"{path.resolve()} (ONNX, sha256 {found.sha256})",
        extra={"user": True, "onnx_sha256": found.sha256, "norm_eps": s.norm_eps, "attn_eps": s.attn_eps,
               "final_norm": s.final_norm, "check_db": found.check_db, "quantized": found.quantized},
    )
    save_manifest(Manifest(default="", models={**user.models, name: entry}), folder)
    return entry, found


def _parameters(state_dict_path: Path) -> int:
    from animecli.weights.checkpoint import read_state_dict

    return sum(int(v.numel()) for v in read_state_dict(state_dict_path).values())
