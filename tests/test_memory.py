"""The activations' budget, computed in one place for both engines (animecli.inference.memory)."""

from __future__ import annotations

from animecli.inference.memory import CPU_BUDGET_MB, CUDA_FREE_SHARE, memory_budget
from animecli.options import Backend, EngineOptions


def test_budget() -> None:
    assert memory_budget(300) == 300 * 2**20
    assert memory_budget(300, lambda: 10**9) == 300 * 2**20  # --max-memory wins on a GPU too
    assert memory_budget(0) == CPU_BUDGET_MB * 2**20
    assert memory_budget(-1, lambda: 10**9) == int(10**9 * CUDA_FREE_SHARE)


def test_the_torch_engine_uses_it() -> None:
    import torch

    from animecli.inference.torch_engine import Engine
    from animecli.models.registry import build_generator
    from animecli.models.spec import Arch, ArchSpec

    torch.manual_seed(0)
    spec = ArchSpec(Arch.V2)
    for mb in (0, 123):
        eng = Engine(build_generator(spec), 4, EngineOptions(device="cpu", backend=Backend.EAGER, max_memory_mb=mb),
                     "v2")
        assert eng.budget == memory_budget(mb)
