"""The manifest of named models (``weights/manifest.json``): every entry's file, architecture,
SHA-256, size, parameter count, input multiple, upsampling mode, style, licence and provenance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from animecli.atomic import atomic_write_bytes
from animecli.dirs import MANIFEST_NAME, cache_dir, weights_dir
from animecli.errors import WeightsError
from animecli.models.spec import Arch, ArchSpec
from animecli.weights.download import read_sidecar, sha256_file

if TYPE_CHECKING:
    pass

# torch is imported by the functions that load tensors, not here: resolving a model's name,
# file and digest (:func:`resolve_file`) must not pay for it (the torch-free onnxruntime engine).


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
    def user(self) -> bool:
        """True for models registered with ``animecli models add`` (kept in ``<cache dir>/models``)."""
        return bool(self.extra.get("user", False))

    def spec(self) -> ArchSpec:
        """The architecture and its options (eps of the imported archs, recorded in the entry)."""
        eps, attn = self.extra.get("norm_eps"), self.extra.get("attn_eps")
        return ArchSpec(self.arch, self.width, self.align_corners,
                        norm_eps=None if eps is None else float(eps), attn_eps=None if attn is None else float(attn),
                        final_norm=bool(self.extra.get("final_norm", True)))

    @property
    def remote(self) -> bool:
        """True for upstream checkpoints that are downloaded with ``animecli models pull``."""
        return self.url is not None

    def path(self) -> Path:
        """Where this model's file is (or would be, once pulled)."""
        if self.user:
            return user_models_dir() / self.file
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
        if entry.remote or entry.user or self.folder is None:
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


def user_models_dir() -> Path:
    """Where ``animecli models add`` keeps registered models and their manifest: ``<cache dir>/models``."""
    return cache_dir() / "models"


def load_user_manifest() -> Manifest:
    """The registered models (``<cache dir>/models/manifest.json``; empty when there is none)."""
    folder = user_models_dir()
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # none registered (or no cache folder: said where it is used)
        return Manifest(default="", models={}, folder=folder)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable list of registered models ({exc}); delete it and "
                           "`animecli models add` the files again") from None
    manifest = parse_manifest(data, folder)
    models = {n: e if e.user else ModelEntry(**{**e.__dict__, "extra": {**e.extra, "user": True}})
              for n, e in manifest.models.items()}
    return Manifest(default="", models=models, folder=folder)


def load_manifest(folder: Path | None = None) -> Manifest:
    """Read ``manifest.json`` from ``folder`` (default: :func:`weights_dir`), with the models
    registered by ``animecli models add`` (their names never shadow shipped ones)."""
    shipped = _load_manifest(folder)
    user = load_user_manifest()
    if not user.models:
        return shipped
    models = {**{n: e for n, e in user.models.items() if n not in shipped.models}, **shipped.models}
    return Manifest(default=shipped.default, models=models, folder=shipped.folder)


def _load_manifest(folder: Path | None = None) -> Manifest:
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

