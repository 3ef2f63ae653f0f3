"""The one place that picks the engine a run uses: ``convert`` (local), the Ray actors and
``animecli bench`` all get theirs here, so the benchmark measures what ``convert`` runs.

The choice, in order:

1. the torch-free :class:`~animecli.inference.ort_engine.OrtEngine` when
   :func:`~animecli.inference.ort_engine.plan_lean` allows it (a named model on the CPU, float32,
   ``onnx``/``auto`` backend, its graph already cached) — it imports neither torch nor the weights;
2. otherwise the PyTorch :class:`~animecli.inference.torch_engine.Engine`, whose backend
   (eager, traced, onnx, int8) ``resolve_backend`` decides.

torch is imported only on the second path: ``select_engine`` itself is cheap to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from animecli.errors import GraphError
from animecli.inference.ort_engine import BatchRunner, OrtEngine, discard, plan_lean
from animecli.models.spec import ArchSpec
from animecli.options import Backend, EngineOptions, ModelChoice

if TYPE_CHECKING:
    from torch import nn

    from animecli.inference.torch_engine import Engine
    from animecli.weights.resolve import LoadedModel


@dataclass(frozen=True)
class Selected:
    """The engine picked for a run, and what the report says about it.

    Attributes:
        engine: runs batches of (H, W, 3) uint8 images of one size.
        name, sha256, spec, licence: the weights (manifest name or file name, checksum,
            architecture, licence or "").
        device, precision, backend: what runs (``"cpu"``/``"cuda:0"``, ``"float32"``…, the
            resolved backend).
        lean: the torch-free engine (no PyTorch in this process unless an image must be tiled).
    """

    engine: BatchRunner
    name: str
    sha256: str
    spec: ArchSpec
    licence: str
    device: str
    precision: str
    backend: Backend
    lean: bool


def torch_engine_for(model: nn.Module, input_multiple: int, opts: EngineOptions, spec: ArchSpec,
                     weights_sha256: str | None = None) -> Engine:
    """The PyTorch engine for a model already built (the Ray actors get the driver's weights).

    ``weights_sha256`` keys the graph cache (exported ONNX graphs, int8 calibrations); without it
    nothing is cached.
    """
    from animecli.inference.torch_engine import Engine

    return Engine(model, input_multiple, opts, spec.arch.value, weights_sha256=weights_sha256, arch_key=spec.key)


def load_torch_engine(model: ModelChoice, opts: EngineOptions) -> tuple[LoadedModel, Engine]:
    """The model loaded in PyTorch (the one safe loader) and its engine.

    Raises:
        WeightsError: the file is missing, corrupt or not a generator.
    """
    from animecli.weights.resolve import load_generator

    loaded = load_generator(model)
    return loaded, torch_engine_for(loaded.model, loaded.input_multiple, opts, loaded.spec, loaded.sha256)


def temporal_engine(model: ModelChoice, opts: EngineOptions) -> Callable[[], Engine]:
    """A factory for the PyTorch engine that video with carried statistics runs on: with
    onnxruntime's video graph where the run would use onnxruntime (``auto``, ``onnx``), else
    eager PyTorch (traced and int8 graphs compute their statistics inside)."""
    backend = opts.backend if opts.backend in (Backend.AUTO, Backend.ONNX) else Backend.EAGER

    def build() -> Engine:
        return load_torch_engine(model, replace(opts, backend=backend, compile=False))[1]

    return build


def select_engine(model: ModelChoice, opts: EngineOptions, *, steady: bool = False) -> Selected:
    """The engine ``convert`` runs ``model`` with under ``opts`` (see the module's docstring).

    With ``steady``, a first run that had to go through PyTorch (which exports and caches the
    graph) picks again: the engine every later ``convert`` run gets, which is what
    ``animecli bench`` measures.

    Raises:
        WeightsError: the weights cannot be loaded.
        SetupError: a backend asked for explicitly is not installed.
    """
    plan = plan_lean(model, opts)
    if plan is not None:
        try:
            lean = OrtEngine(plan, opts, lambda: load_torch_engine(model, opts)[1])
        except GraphError:  # a damaged cache file: the PyTorch engine exports the model again
            discard(plan)
        else:
            from animecli.weights.manifest import load_manifest

            licence = load_manifest().get(plan.weights.name).licence  # plan_lean runs named models only
            return Selected(lean, plan.weights.name, plan.weights.sha256, plan.spec, licence, lean.device,
                            lean.precision_name, lean.backend, lean=True)
    loaded, engine = load_torch_engine(model, opts)
    if steady and plan_lean(model, opts) is not None:
        del engine, loaded
        return select_engine(model, opts)
    return Selected(engine, loaded.name, loaded.sha256, loaded.spec, loaded.licence, str(engine.device),
                    engine.precision_name, engine.backend, lean=False)


class EngineCache:
    """Keeps the engine of the last :meth:`get` for a long-lived front end (``animecli watch``
    converts a few files per round: loading the model every round cost more than the files).

    The key is the model choice and the engine options; a weights file replaced while the cache
    lives is not noticed (restart the watch after changing the model's file).
    """

    def __init__(self) -> None:
        self._key: tuple[ModelChoice, EngineOptions] | None = None
        self._selected: Selected | None = None

    def get(self, model: ModelChoice, opts: EngineOptions) -> Selected:
        """The engine for ``model`` under ``opts``: the kept one when they are the same as last time."""
        if self._selected is None or self._key != (model, opts):
            self._selected = None  # the previous engine is dropped before the next one is built
            self._selected = select_engine(model, opts)
            self._key = (model, opts)
        return self._selected
