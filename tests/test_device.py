"""``--device`` read once (animecli.inference.device)."""

from __future__ import annotations

import pytest

from animecli.errors import UsageError
from animecli.inference import device as device_mod
from animecli.inference.device import DeviceKind, read_device, resolve_device


@pytest.mark.parametrize(("name", "kind", "index", "plain"), [
    ("auto", DeviceKind.AUTO, None, True),
    ("cpu", DeviceKind.CPU, None, True),
    ("cuda", DeviceKind.CUDA, None, True),
    ("cuda:1", DeviceKind.CUDA, 1, False),
    ("cpu:0", DeviceKind.CPU, 0, False),
    ("auto:0", DeviceKind.OTHER, None, False),
    ("mps", DeviceKind.OTHER, None, False),
    ("CPU", DeviceKind.OTHER, None, False),
    ("", DeviceKind.OTHER, None, False),
])
def test_read_device(name: str, kind: DeviceKind, index: int | None, plain: bool) -> None:
    req = read_device(name)
    assert (req.name, req.kind, req.index, req.plain) == (name, kind, index, plain)


def test_surely_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_device("cpu").surely_cpu()
    assert not read_device("cuda").surely_cpu()
    assert not read_device("cpu:0").surely_cpu()  # what the torch-free engine has always refused
    for build, cpu in ((False, True), (True, False), (None, False)):
        monkeypatch.setattr(device_mod, "torch_has_gpu_build", lambda b=build: b)
        assert read_device("auto").surely_cpu() is cpu


def test_resolve_device_messages() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="unknown --device 'bogus'"):
        resolve_device("bogus")
    with pytest.raises(UsageError, match="unsupported --device 'meta'"):
        resolve_device("meta")
