"""``--device``, read in one place: :func:`read_device` says what was asked for (without torch:
the torch-free engine decides from it), :func:`resolve_device` makes the torch device (with the
checks that need torch). Convert's engines, Ray's pool, the bench and training all go through here."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from animecli.errors import SetupError, UsageError

if TYPE_CHECKING:
    import torch

_FORM = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


class DeviceKind(str, Enum):
    """The device families ``--device`` names (``other``: anything else, for torch to judge)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    OTHER = "other"


@dataclass(frozen=True)
class DeviceRequest:
    """What ``--device`` asked for, read without torch.

    Attributes:
        name: the option's text, as given.
        kind: ``auto``, ``cpu``, ``cuda``, or ``other`` (``mps``, a typo: torch judges it).
        index: the ``N`` of ``cuda:N`` (or ``cpu:N``); ``None`` when not given.
    """

    name: str
    kind: DeviceKind
    index: int | None = None

    @property
    def plain(self) -> bool:
        """``auto``, ``cpu`` or ``cuda`` without an index (what a Ray pool can place)."""
        return self.kind is not DeviceKind.OTHER and self.index is None

    def surely_cpu(self) -> bool:
        """Whether the run is on the CPU, told without importing torch: ``cpu``, or ``auto``
        with a CPU-only torch build (``False`` when only torch can tell)."""
        if self.kind is DeviceKind.CPU and self.index is None:
            return True
        return self.kind is DeviceKind.AUTO and torch_has_gpu_build() is False


def read_device(name: str) -> DeviceRequest:
    """Read ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; anything else is ``other``). Never raises."""
    found = _FORM.fullmatch(name)
    if found is None or (found.group(1) == "auto" and found.group(2) is not None):
        return DeviceRequest(name, DeviceKind.OTHER)
    index = found.group(2)
    return DeviceRequest(name, DeviceKind(found.group(1)), None if index is None else int(index))


def torch_has_gpu_build() -> bool | None:
    """Whether the installed torch is a CUDA or ROCm build, read from ``torch/version.py``
    without importing torch; ``None`` if that cannot be told (then torch decides)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    for field in ("cuda", "hip"):
        found = re.search(rf"^{field}\s*(?::[^=\n]*)?=\s*(.+?)\s*$", text, re.MULTILINE)
        if found is None:
            return None
        if found.group(1) != "None":
            return True
    return False


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU. Asking for CUDA without it is an error, never a fallback.

    Raises:
        UsageError: not a device torch knows, or not a CPU or CUDA one.
        SetupError: CUDA asked for and not usable, or no such CUDA device.
    """
    import torch

    req = read_device(name)
    if req.kind is DeviceKind.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
            raise SetupError(
                f"--device {name} asked for CUDA, but no CUDA GPU is usable (torch {torch.__version__}, {build}); "
                "install a CUDA build of torch and a driver, or use --device cpu"
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise SetupError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present; use cuda:0"
                f"..cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type != "cpu":
        raise UsageError(f"unsupported --device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev
