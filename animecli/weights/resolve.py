"""From a model's name (or ``--weights`` file) to its verified file and architecture, and the one
function that loads a generator; pulling an upstream model by its manifest entry.

``weights/manifest.json`` describes every named model: its file, architecture,
SHA-256, size, parameter count, input multiple, upsampling mode, style,
licence and provenance. Shipped models live beside the manifest; upstream
checkpoints (``"url"`` set) are pulled into :func:`animecli.dirs.cache_dir` by
:func:`pull`, which has the downloader check that the bytes load as the entry's
architecture before their digest is recorded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from animecli.dirs import cache_dir
from animecli.errors import WeightsError
from animecli.models.spec import Arch, ArchSpec, describe
from animecli.options import ModelChoice
from animecli.weights.checkpoint import build_and_load, checkpoint_problem, read_state_dict
from animecli.weights.download import NoticeFn, ProgressFn, RemoteFile, download
from animecli.weights.imported import cached_import, import_file, is_onnx_file, load_imported
from animecli.weights.manifest import Manifest, ModelEntry, load_manifest, sha256_of

if TYPE_CHECKING:
    from torch import nn

# torch is imported by the functions that load tensors, not here: resolving a model's name,
# file and digest (:func:`resolve_file`) must not pay for it (the torch-free onnxruntime engine).


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
    spec = entry.spec()
    if is_onnx_file(Path(entry.file)):
        remote = RemoteFile(entry.name, entry.url, entry.size, entry.sha256, kind=f"{entry.arch.value} ONNX file")

        def check(path: Path) -> str | None:
            return onnx_problem(path, spec)
    else:
        remote = RemoteFile(entry.name, entry.url, entry.size, entry.sha256, kind=f"{entry.arch.value} checkpoint")

        def check(path: Path) -> str | None:
            return checkpoint_problem(path, spec)

    return download(remote, cache_dir(), progress, check=check, notice=notice)


def onnx_problem(path: Path, spec: ArchSpec) -> str | None:
    """Why a downloaded ONNX file is not the entry's generator, or ``None`` if it imports as ``spec.arch``
    (and reproduces itself against onnxruntime, where installed)."""
    from animecli.errors import AnimecliError

    try:
        found = import_file(path)
    except AnimecliError as exc:
        return str(exc).removeprefix(f"{path}: ")
    if found.spec.arch is not spec.arch:
        return f"an ONNX {found.spec.arch.value} generator, not {spec.arch.value}"
    return None


@dataclass(frozen=True)
class LoadedModel:
    """A ready generator and what is known about it.

    ``licence`` is the weights' (the manifest entry's; the AnimeGAN author's non-commercial one
    for ONNX files); "" when unknown (a state dict given with ``--weights``).
    """

    model: nn.Module
    name: str
    spec: ArchSpec
    input_multiple: int
    sha256: str
    path: Path
    licence: str = ""


def resolve(
    choice: ModelChoice, manifest: Manifest | None = None
) -> tuple[str, Path, ArchSpec | None, int, str | None]:
    """Turn a :class:`ModelChoice` into (name, path, spec or None to detect, input multiple, expected sha256)."""
    if choice.weights is not None:
        spec = None
        if choice.arch is not None and is_onnx_file(choice.weights):
            raise WeightsError(f"--arch {choice.arch}: not for an ONNX file ({choice.weights}); its generator is "
                               "recognised from the graph: drop --arch")
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
    return name, path, entry.spec(), entry.input_multiple, expected


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
    if is_onnx_file(path):
        # The spec and size multiple come from the file's graph: known without torch or onnx once it
        # was imported (the torch-free engine can run it then), else detected on loading.
        found = cached_import(digest)
        spec, multiple = (None, multiple) if found is None else (found.spec, found.size_multiple)
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
    from animecli.models.registry import detect_arch, fit_widths

    file = resolve_file(choice, manifest)
    path, spec = file.path, file.spec
    licence = "" if choice.weights is not None else (manifest or load_manifest()).get(file.name).licence
    if is_onnx_file(path):
        imp = import_file(path, file.sha256)
        model = load_imported(imp, fast_norm)
        return LoadedModel(model, file.name, imp.spec, imp.size_multiple, file.sha256, path,
                           licence or imp.licence)
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
    spec = fit_widths(dataclasses.replace(spec, fast_norm=fast_norm), sd)
    model = build_and_load(spec, sd, str(path))
    # A --weights file has no manifest entry to give its size multiple: its architecture does (the
    # AnimeGANv3 archs need 8 or 16; padding to 4 broke their skip additions in onnxruntime).
    multiple = file.input_multiple if choice.weights is None else max(file.input_multiple,
                                                                       describe(spec.arch).size_multiple)
    return LoadedModel(model, file.name, spec, multiple, file.sha256, path, licence)
