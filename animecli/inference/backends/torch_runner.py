"""TorchRunner: the generator run in PyTorch, eager (optionally ``torch.compile``-d) or traced."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from animecli.errors import SetupError
from animecli.options import Backend

__all__ = ["TorchRunner"]


class TorchRunner:
    """Eager (optionally ``torch.compile``-d) or traced PyTorch.

    Args:
        model: the generator, already on its device/dtype/memory format, in eval mode.
        backend: ``eager`` or ``traced``.
        memory_format: layout of the inputs (channels-last by default).
        compile: run the eager model through ``torch.compile`` (one graph per input shape;
            on CUDA with CUDA graphs, ``mode="reduce-overhead"``); eager only
            (:func:`~animecli.inference.backends.make_runner` refuses it with another backend).
            The first image of each shape pays the compilation (tens of seconds); it suits
            folders of one size.
    """

    def __init__(
        self, model: nn.Module, backend: Backend, memory_format: torch.memory_format = torch.channels_last,
        compile: bool = False,
    ) -> None:
        if backend not in (Backend.EAGER, Backend.TRACED):
            raise ValueError(f"TorchRunner runs eager or traced, not {backend.value}")
        self.model = model
        self.backend: Backend = backend
        self.memory_format = memory_format
        self._traced: dict[tuple[int, int, int], Callable[[torch.Tensor], torch.Tensor]] = {}
        self._cuda = next(model.parameters()).device.type == "cuda"
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        if compile and backend is Backend.EAGER:
            mode = "reduce-overhead" if self._cuda else None
            self._compiled = torch.compile(model, dynamic=False, mode=mode)

    def _run_compiled(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        import torch._dynamo.exc as dynamo_exc

        if self._cuda:
            torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]  # the previous batch's outputs are already copied out
        try:
            return fn(x)
        except dynamo_exc.TorchDynamoException as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise SetupError(
                f"--compile: torch.compile failed ({first}); on CPU it needs a C++ compiler (gcc or clang) "
                "on PATH; or drop --compile"
            ) from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] → same shape in [-1, 1]; call under ``torch.inference_mode``."""
        if self._compiled is not None:
            return self._run_compiled(self._compiled, x)
        if self.backend is Backend.EAGER:
            out: torch.Tensor = self.model(x)
            return out
        key = (int(x.shape[0]), int(x.shape[2]), int(x.shape[3]))
        fn = self._traced.get(key)
        if fn is None:
            # A traced graph is specialised to its input shape in places (padding, interpolate
            # sizes), so one is traced and frozen per shape; photo folders have few shapes.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings: shape-dependent values, hence one graph per shape
                traced = torch.jit.trace(self.model, x, check_trace=False)  # type: ignore[no-untyped-call]
            fn = torch.jit.freeze(traced)
            if len(self._traced) >= 8:
                self._traced.pop(next(iter(self._traced)))
            self._traced[key] = fn
        return fn(x)

