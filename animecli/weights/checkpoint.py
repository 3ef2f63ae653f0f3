"""The one safe way to read a checkpoint (``torch.load(weights_only=True)``), strict building of
a generator from a state dict, and sniffing what a file that does not load actually is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from animecli.errors import WeightsError
from animecli.models.spec import Arch, ArchSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported by the functions that load tensors, not here: resolving a model's name,
# file and digest (:func:`resolve_file`) must not pay for it (the torch-free onnxruntime engine).


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict safely (``weights_only=True``), with a clear error for each way it can fail.

    Accepts a plain state dict or one wrapped as ``{"state_dict": …}`` / ``{"model": …}``
    (our training checkpoints).
    """
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; check the path, or run `animecli models list`")
    obj, failure = _load_tensors(path)
    if failure is not None:
        raise WeightsError(
            f"{path}: not a readable PyTorch state dict ({failure}); give a generator's .pt file "
            "(if it is one, it is truncated or corrupt: download or copy it again)"
        )
    sd = _as_state_dict(obj)
    if sd is None:
        raise WeightsError(f"{path}: does not hold a state dict of tensors; pass a generator's state dict")
    return sd


_UNSAFE = "not a plain tensor file: it would need unsafe loading, which animecli never does"


def _load_tensors(path: Path) -> tuple[object, str | None]:
    """``(torch.load(path, weights_only=True), None)``, or ``(None, why it failed)`` in one line."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as exc:  # any file that is not a state dict (a text file: KeyError, struct.error …)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if len(first) > 120:
            first = first[:120].rsplit(" ", 1)[0] + " …"  # cut between words
        if "weights only load failed" in first.lower():
            # torch's advice here is to load without weights_only, i.e. to run code from the file
            return None, _UNSAFE
        return None, f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _as_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    """The state dict in a loaded object (plain, or under ``"state_dict"``/``"model"``), or None."""
    import torch

    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    return {str(k): v for k, v in obj.items()}


def _key_diff(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> str:
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shape = [k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shape)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def build_and_load(spec: ArchSpec, sd: Mapping[str, torch.Tensor], origin: str) -> nn.Module:
    """Build ``spec`` and load ``sd`` with ``strict=True``; explain a mismatch key by key.

    A structurally pruned ``animeganv3``/``animeganv3-tiny`` file is built at the layer widths its
    shapes give (:func:`~animecli.models.registry.fit_widths`), then loaded just as strictly.
    """
    import torch

    from animecli.models.registry import build_generator, fit_widths

    spec = fit_widths(spec, sd)
    try:
        model = build_generator(spec)
    except ValueError as exc:  # pruned widths that break the generator's skip additions
        raise WeightsError(f"{origin}: weights do not fit the {spec.arch.value} architecture ({exc}); "
                           "pass a file made for animecli") from None
    if spec.arch is Arch.LITE and "head.0.weight" in sd and "skip.weight" not in sd:
        # lite files from before the colour skip existed: a zero skip is exactly that older network.
        sd = {**sd, "skip.weight": torch.zeros(3, 3, 1, 1), "skip.bias": torch.zeros(3)}
    diff = _key_diff(model, sd)
    if diff:
        raise WeightsError(
            f"{origin}: weights do not fit the {spec.arch.value} architecture ({diff}); "
            "pass the right --arch, or a file made for animecli"
        )
    model.load_state_dict(sd, strict=True)
    return model.eval()


# How a torch.save file starts: a zip archive (torch >= 1.6) or a pickle (the legacy format).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_HTML_MARKS = (b"<!doctype html", b"<html", b"<head", b"<body")


def checkpoint_problem(path: Path, spec: ArchSpec) -> str | None:
    """Why ``path`` is not a state dict that loads strictly into ``spec``, or None if it is.

    Meant for files that nothing else vouches for (a first download, before its digest
    is recorded), so the reason names what the file looks like rather than the file.

    Args:
        path: the file to check.
        spec: the architecture it must load into (``strict=True``).

    Returns:
        None if it loads; else a short reason such as ``"an HTML page"``,
        ``"truncated or corrupt"`` or ``"a lite checkpoint"``.
    """
    from animecli.models.registry import detect_arch

    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not head:
        return "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<") and any(mark in text for mark in _HTML_MARKS):
        # What a captive portal, a login wall or a moved page answers with HTTP 200.
        return "an HTML page"
    obj, failure = _load_tensors(path)
    if failure is not None and not head.startswith(_TORCH_MAGIC):
        # Checked first: torch reads any other bytes as a legacy pickle and calls them unsafe.
        return "not a PyTorch file"
    if failure == _UNSAFE:
        return "a pickle that would need unsafe loading"
    if failure is not None:
        # A torch file that does not load was cut short (a body without Content-Length
        # ends silently) or damaged.
        return "truncated or corrupt"
    sd = _as_state_dict(obj)
    if sd is None:
        return "a PyTorch file that holds no state dict"
    try:
        build_and_load(spec, sd, str(path))
    except WeightsError:
        found = detect_arch(sd)
        if found is not None and found[0] is not spec.arch:
            return f"a {found[0].value} checkpoint"
        return f"a state dict whose keys or shapes do not fit {spec.arch.value} at width {spec.width:g}"
    return None

