"""The weights layer: the manifest of named models, and the one function that loads a generator.

``weights/manifest.json`` describes every named model: its file, architecture,
SHA-256, size, parameter count, input multiple, upsampling mode, style,
licence and provenance. Shipped models live beside the manifest; upstream
checkpoints (``"url"`` set) are pulled into :func:`animecli.hub.cache_dir` by
:func:`pull`, which has the downloader check that the bytes load as the entry's
architecture before their digest is recorded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from animecli.atomic import atomic_write_bytes
from animecli.errors import WeightsError
from animecli.hub import NoticeFn, ProgressFn, RemoteFile, download, read_sidecar, sha256_file
from animecli.hub import cache_dir as hub_cache_dir
from animecli.models.spec import Arch, ArchSpec
from animecli.options import ModelChoice

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported by the functions that load tensors, not here: resolving a model's name,
# file and digest (:func:`resolve_file`) must not pay for it (the torch-free onnxruntime engine).

MANIFEST_NAME = "manifest.json"


def weights_dir() -> Path:
    """Folder of the shipped weights and their manifest.

    ``$ANIMECLI_WEIGHTS_DIR`` if set; else the source tree's ``weights/`` (editable
    installs and checkouts); else ``<prefix>/share/animecli/weights`` (wheel installs).
    """
    env = os.environ.get("ANIMECLI_WEIGHTS_DIR")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parent.parent / "weights"
    if (source / MANIFEST_NAME).is_file():
        return source
    return Path(sys.prefix) / "share" / "animecli" / "weights"


def cache_dir() -> Path:
    """Where pulled upstream checkpoints live: ``$ANIMECLI_HOME`` or the platform cache folder."""
    return hub_cache_dir()


@dataclass(frozen=True)
class ModelEntry:
    """One manifest entry.

    Attributes:
        name: the model's name (``--model NAME``).
        file: file name (in the weights dir, or the cache for pulled models).
        arch: architecture.
        width: channel multiplier.
        align_corners: v2 upsampling mode.
        input_multiple: input H and W are padded to a multiple of this.
        sha256: expected digest, or ``None`` for upstream files not yet pulled.
        size: file size in bytes, if known.
        parameters: number of parameters.
        style: one-line description of the look.
        licence: licence or usage condition.
        source: provenance (teacher, training data, upstream URL).
        url: download URL for upstream checkpoints; ``None`` for shipped files.
        extra: anything else recorded (quality figures, training steps).
    """

    name: str
    file: str
    arch: Arch
    width: float = 1.0
    align_corners: bool = True
    input_multiple: int = 4
    sha256: str | None = None
    size: int | None = None
    parameters: int | None = None
    style: str = ""
    licence: str = ""
    source: str = ""
    url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        """True for upstream checkpoints that are downloaded with ``animecli models pull``."""
        return self.url is not None

    def path(self) -> Path:
        """Where this model's file is (or would be, once pulled)."""
        return (cache_dir() if self.remote else weights_dir()) / self.file

    def to_json(self) -> dict[str, Any]:
        """The manifest representation."""
        d: dict[str, Any] = {
            "file": self.file,
            "arch": self.arch.value,
            "width": self.width,
            "align_corners": self.align_corners,
            "input_multiple": self.input_multiple,
            "sha256": self.sha256,
            "size": self.size,
            "parameters": self.parameters,
            "style": self.style,
            "licence": self.licence,
            "source": self.source,
        }
        if self.url:
            d["url"] = self.url
        d.update(self.extra)
        return d


_KNOWN_FIELDS = {
    "file", "arch", "width", "align_corners", "input_multiple", "sha256", "size",
    "parameters", "style", "licence", "source", "url",
}


class InstallState(str, Enum):
    """What ``animecli models list`` says of a model's file."""

    INSTALLED = "yes"
    MISSING = "missing"
    DAMAGED = "damaged"


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest: named entries, the default model's name, and the folder it was read from.

    ``folder`` (``None`` = :func:`weights_dir`) is where shipped entries' files are looked up.
    """

    default: str
    models: Mapping[str, ModelEntry]
    folder: Path | None = None

    def path_of(self, entry: ModelEntry) -> Path:
        """Where ``entry``'s file is: the cache for pulled models, else beside this manifest."""
        if entry.remote or self.folder is None:
            return entry.path()
        return self.folder / entry.file

    def expected_sha256(self, entry: ModelEntry) -> str | None:
        """The digest ``entry``'s file must have: the manifest's, else the one recorded when it was pulled.

        Raises:
            WeightsError: a pulled file's record is there but holds no digest.
        """
        if entry.sha256 is not None or not entry.remote:
            return entry.sha256
        path = self.path_of(entry)
        # The record `models pull` wrote (none for a file placed by hand: nothing to check it against).
        return read_sidecar(path.with_name(entry.file + ".sha256"), path, entry.name)

    def install_state(self, entry: ModelEntry) -> InstallState:
        """Whether ``entry``'s file is there and whole (size and SHA-256, where they are known).

        A file cut short or changed after it was installed or pulled used to show as
        installed until a convert refused it.
        """
        path = self.path_of(entry)
        if not path.is_file():
            return InstallState.MISSING
        try:
            expected = self.expected_sha256(entry)
            if entry.size is not None and path.stat().st_size != entry.size:
                return InstallState.DAMAGED
            if expected is not None and sha256_file(path) != expected:
                return InstallState.DAMAGED
        except (OSError, WeightsError):
            return InstallState.DAMAGED
        return InstallState.INSTALLED

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name``, or a :class:`WeightsError` listing the known names."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise WeightsError(
                f"unknown model {name!r}; known models: {known} (see `animecli models list`), "
                "or pass a file with --weights PATH"
            ) from None


def parse_manifest(data: Mapping[str, Any], folder: Path | None = None) -> Manifest:
    """Build a :class:`Manifest` from its JSON form."""
    models = {}
    for name, raw in data.get("models", {}).items():
        extra = {k: v for k, v in raw.items() if k not in _KNOWN_FIELDS}
        models[name] = ModelEntry(
            name=name,
            file=raw["file"],
            arch=Arch(raw["arch"]),
            width=float(raw.get("width", 1.0)),
            align_corners=bool(raw.get("align_corners", True)),
            input_multiple=int(raw.get("input_multiple", 4)),
            sha256=raw.get("sha256"),
            size=raw.get("size"),
            parameters=raw.get("parameters"),
            style=raw.get("style", ""),
            licence=raw.get("licence", ""),
            source=raw.get("source", ""),
            url=raw.get("url"),
            extra=extra,
        )
    return Manifest(default=str(data.get("default", "")), models=models, folder=folder)


def load_manifest(folder: Path | None = None) -> Manifest:
    """Read ``manifest.json`` from ``folder`` (default: :func:`weights_dir`)."""
    folder = folder or weights_dir()
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(
            f"{path}: model manifest not found; reinstall animecli, set ANIMECLI_WEIGHTS_DIR, "
            "or pass a file with --weights PATH"
        ) from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable manifest ({exc}); restore it from the animecli release") from None
    return parse_manifest(data, folder)


def save_manifest(manifest: Manifest, folder: Path) -> None:
    """Write the manifest (sorted, indented) to ``folder/manifest.json``."""
    data = {
        "schema": 1,
        "default": manifest.default,
        "models": {n: manifest.models[n].to_json() for n in sorted(manifest.models)},
    }
    # Atomic: a cut manifest would hide every model in the folder.
    atomic_write_bytes(folder / MANIFEST_NAME, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, streamed."""
    return sha256_file(path)


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
    """Build ``spec`` and load ``sd`` with ``strict=True``; explain a mismatch key by key."""
    import torch

    from animecli.models.registry import build_generator

    model = build_generator(spec)
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


def pull(entry: ModelEntry, progress: ProgressFn | None = None, notice: NoticeFn | None = None) -> Path:
    """Download an upstream model into the cache, checked to be a checkpoint of its architecture.

    A file already there that matches its digest is kept, without network access, if it
    loads; one recorded by an earlier pull that does not load is downloaded again.

    Args:
        entry: a manifest entry with a ``url``.
        progress: called as ``progress(bytes_done, total_or_None)`` while bytes arrive.
        notice: told, in one line, when a bad earlier download is replaced.

    Returns:
        The downloaded (or already present) file.

    Raises:
        ValueError: ``entry`` has no ``url`` (it ships with animecli).
        DownloadError: the server cannot be reached or the file cannot be written.
        WeightsError: the bytes have the wrong size or digest, or do not load as
            ``entry``'s architecture; nothing is saved then.
    """
    if entry.url is None:
        raise ValueError(f"model {entry.name!r} ships with animecli; there is nothing to pull")
    spec = ArchSpec(entry.arch, entry.width, entry.align_corners)
    remote = RemoteFile(entry.name, entry.url, entry.size, entry.sha256, kind=f"{entry.arch.value} checkpoint")

    def check(path: Path) -> str | None:
        return checkpoint_problem(path, spec)

    return download(remote, cache_dir(), progress, check=check, notice=notice)


@dataclass(frozen=True)
class LoadedModel:
    """A ready generator and what is known about it."""

    model: nn.Module
    name: str
    spec: ArchSpec
    input_multiple: int
    sha256: str
    path: Path


def resolve(
    choice: ModelChoice, manifest: Manifest | None = None
) -> tuple[str, Path, ArchSpec | None, int, str | None]:
    """Turn a :class:`ModelChoice` into (name, path, spec or None to detect, input multiple, expected sha256)."""
    if choice.weights is not None:
        spec = None
        if choice.arch is not None:
            try:
                arch = Arch(choice.arch)
            except ValueError:
                raise WeightsError(f"unknown --arch {choice.arch!r}; use one of: v2, lite, lite2, lite3") from None
            spec = ArchSpec(arch, align_corners=choice.align_corners if choice.align_corners is not None else True)
        return choice.weights.name, choice.weights, spec, 4, None
    manifest = manifest or load_manifest()
    name = choice.name or manifest.default
    entry = manifest.get(name)
    path = manifest.path_of(entry)
    if entry.remote and not path.is_file():
        raise WeightsError(f"model {name!r} is not downloaded yet; run `animecli models pull {name}` first")
    expected = manifest.expected_sha256(entry)
    spec = ArchSpec(entry.arch, entry.width, entry.align_corners)
    return name, path, spec, entry.input_multiple, expected


@dataclass(frozen=True)
class WeightsFile:
    """A weights file found and checked, not yet read.

    Attributes:
        name: the model's name (the file name for ``--weights``).
        path: the file.
        spec: the architecture, or ``None`` when it must be detected from the file's keys.
        input_multiple: input H and W are padded to a multiple of this.
        sha256: the file's digest (checked against the manifest where it records one).
    """

    name: str
    path: Path
    spec: ArchSpec | None
    input_multiple: int
    sha256: str


def resolve_file(choice: ModelChoice, manifest: Manifest | None = None) -> WeightsFile:
    """Find the weights file for ``choice`` and verify its checksum, without reading it (no torch).

    Raises:
        WeightsError: missing file, checksum mismatch, unknown name or architecture.
    """
    name, path, spec, multiple, expected = resolve(choice, manifest)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; give the generator's .pt file")
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; check the path, or reinstall animecli")
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        raise WeightsError(
            f"{path}: checksum mismatch (expected {expected[:12]}…, got {digest[:12]}…); "
            "the file is corrupt or was replaced: reinstall it or `animecli models pull` it again"
        )
    return WeightsFile(name, path, spec, multiple, digest)


def load_generator(choice: ModelChoice, fast_norm: bool = True, manifest: Manifest | None = None) -> LoadedModel:
    """The one way to get a generator: resolve, verify checksum, load strictly.

    Args:
        choice: ``--model`` / ``--weights`` / ``--arch`` as given.
        fast_norm: use the fast normalisation (same weights, same output).
        manifest: a manifest to use instead of the shipped one (tests).

    Raises:
        WeightsError: missing, unreadable, corrupt, mismatching or unknown weights.
    """
    from animecli.models.registry import detect_arch

    file = resolve_file(choice, manifest)
    path, spec = file.path, file.spec
    sd = read_state_dict(path)
    if spec is None:
        found = detect_arch(sd)
        if found is None:
            raise WeightsError(
                f"{path}: cannot tell the architecture from its keys (first key {next(iter(sd), '?')!r}); "
                "it is not an animecli generator, or pass --arch v2, lite, lite2 or lite3"
            )
        align = choice.align_corners if choice.align_corners is not None else True
        spec = ArchSpec(found[0], found[1], align)
    elif choice.weights is not None:
        found = detect_arch(sd)
        if found is not None and found[0] is spec.arch:
            spec = ArchSpec(spec.arch, found[1], spec.align_corners)
    spec = ArchSpec(spec.arch, spec.width, spec.align_corners, fast_norm)
    model = build_and_load(spec, sd, str(path))
    return LoadedModel(model, file.name, spec, file.input_multiple, file.sha256, path)
