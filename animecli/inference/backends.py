# Over 400 lines: backend choice, runners, export, int8 and the graph memo still share one module (to split).
"""Backends: how the generator's forward pass is executed.

* ``eager``  — plain PyTorch, channels-last, :class:`~animecli.models.norm.FastGroupNorm`.
* ``traced`` — the same, TorchScript-traced and frozen, one graph per input shape.
* ``onnx``   — the generator exported once to ONNX (opset 17, dynamic N/H/W) and run by
  onnxruntime's CPU execution provider. Float32; matches eager to ~1e-5.
* ``int8``   — the ONNX graph with every convolution statically quantised (QDQ format:
  int8 per-channel weights, uint8 activations), calibrated once on real photos. It changes
  the output slightly (see ``docs/speed.md``), so it is never chosen automatically.
* ``auto``   — CUDA: eager. CPU, float32: ``onnx`` when onnxruntime is installed, else
  ``eager``. CPU, bfloat16: eager.

Exported and quantised graphs are cached in ``<cache dir>/compiled/`` (``$ANIMECLI_HOME``
or the platform cache folder), keyed by the SHA-256 of the weights, the architecture
and an export version, so export and calibration run once per model.

onnxruntime is an optional dependency (``pip install 'animecli[onnx]'``): without it,
asking for ``onnx`` or ``int8`` raises :class:`~animecli.errors.SetupError`.

This module never prints and never exits.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from animecli.errors import GraphError, SetupError, UsageError
from animecli.inference.graph_cache import cached, discard
from animecli.inference.ort_session import (
    EXPORT_VERSION,
    ONNX_HINT,
    OPSET,
    CompiledPaths,
    OrtSession,
    SplitGraph,
    cache_key,
    compiled_paths,
    onnxruntime_available,
    require_onnxruntime,
)
from animecli.models.animeganv3 import LADE, ExternalAttention, GeneratorV2TF
from animecli.models.lite import GeneratorLite
from animecli.models.norm import FastGroupNorm
from animecli.models.v2 import GeneratorV2
from animecli.options import Backend

__all__ = [
    "EXPORT_VERSION",
    "ONNX_HINT",
    "OPSET",
    "BackendChoice",
    "CompiledPaths",
    "ExportGroupNorm",
    "OrtRunner",
    "Runner",
    "TorchRunner",
    "calibration_images",
    "export_onnx",
    "exportable",
    "make_runner",
    "model_digest",
    "onnxruntime_available",
    "quantize_int8",
    "require_onnxruntime",
    "resolve_backend",
]

CALIBRATION_SIZE = 512


class Runner(Protocol):
    """A callable forward pass.

    Attributes:
        backend: the backend it implements.
        memory_format: the layout its input should have (channels-last for PyTorch,
            contiguous NCHW for onnxruntime).
    """

    backend: Backend
    memory_format: torch.memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] → (N, 3, H, W) float in [-1, 1]."""
        ...


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses, and why.

    Attributes:
        backend: the resolved backend (never ``auto``).
        reason: one line explaining an automatic choice ("" when asked for explicitly).
    """

    backend: Backend
    reason: str = ""


def resolve_backend(requested: Backend, device: torch.device, dtype: torch.dtype) -> BackendChoice:
    """Turn ``--backend`` into a concrete backend for this device and precision.

    Raises:
        UsageError: ``onnx``/``int8`` asked for on CUDA or in half precision.
        SetupError: ``onnx``/``int8`` asked for without onnxruntime installed.
    """
    if requested is Backend.AUTO:
        if device.type != "cpu":
            return BackendChoice(Backend.EAGER, "CUDA: eager PyTorch (channels-last, fast norm)")
        if dtype != torch.float32:
            return BackendChoice(Backend.EAGER, f"{str(dtype)[6:]} on CPU: eager PyTorch")
        # Measured side by side on a 2-core CPU (docs/speed.md, 512 px, end to end): onnxruntime
        # ran the default lite model 1.5x faster than eager PyTorch (the exported norm is one
        # BatchNormalization pass) and v2 at par; traced was no faster than eager (0.98x lite,
        # 0.87x v2) and pays a trace per new input size, so eager is the fallback.
        if onnxruntime_available():
            return BackendChoice(Backend.ONNX, "CPU float32: onnxruntime (fastest measured on CPU)")
        return BackendChoice(Backend.EAGER, f"CPU float32 without onnxruntime: eager PyTorch ({ONNX_HINT})")
    if requested in (Backend.ONNX, Backend.INT8):
        if device.type != "cpu":
            raise UsageError(
                f"--backend {requested.value} runs on the CPU (onnxruntime's CPU provider); "
                "use --device cpu, or --backend eager/traced on CUDA"
            )
        if dtype != torch.float32:
            raise UsageError(
                f"--backend {requested.value} computes in float32 (int8: quantised float32); "
                "drop --precision or use --precision fp32"
            )
        require_onnxruntime(requested)
    return BackendChoice(requested)


# ---------------------------------------------------------------------------------------------
# PyTorch runners


class TorchRunner:
    """Eager (optionally ``torch.compile``-d) or traced PyTorch.

    Args:
        model: the generator, already on its device/dtype/memory format, in eval mode.
        backend: ``eager`` or ``traced``.
        memory_format: layout of the inputs (channels-last by default).
        compile: run the eager model through ``torch.compile`` (one graph per input shape;
            on CUDA with CUDA graphs, ``mode="reduce-overhead"``); eager only (:func:`make_runner`
            refuses it with another backend). The first image of each shape pays the
            compilation (tens of seconds); it suits folders of one size.
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


# ---------------------------------------------------------------------------------------------
# ONNX export


class ExportGroupNorm(nn.Module):
    """``GroupNorm(1, C)`` written in ops that export to a fast ONNX graph.

    Same function and parameters as :class:`~animecli.models.norm.FastGroupNorm` (and
    ``nn.GroupNorm(1, C)``). The statistics are per-row partial sums, like the eager
    version (accurate to ~1e-6 where one float32 sum over millions of values is not), and
    the normalisation itself is one ``BatchNormalization`` node over the (1, N·C, H, W)
    view, with per-(sample, channel) mean, variance, weight and bias: a single pass over
    the activations, where ``x * scale + shift`` would be two.

    Args:
        norm: the layer to mirror (its ``weight`` and ``bias`` are shared, not copied).
        feed: where frozen statistics come from in a fixed-statistics graph (``None`` = never).
        index: this layer's row in ``feed.stats`` (its place among the model's norms).
    """

    def __init__(self, norm: FastGroupNorm | nn.GroupNorm, feed: StatsFeed | None = None, index: int = 0) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = float(norm.eps)
        self.feed = feed
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 contiguous → (N, C, H, W), normalised over (C, H, W) per sample."""
        n, c, h, w = x.shape
        if self.feed is not None and self.feed.stats is not None:
            # Tiling: the whole image's (mean, var), a graph input, instead of this tile's own.
            mean = self.feed.stats[self.index, 0].expand(n)
            var = self.feed.stats[self.index, 1].expand(n)
        else:
            rows = x.reshape(n, c * h, w)
            mean = rows.mean(dim=2).mean(dim=1)
            mean_sq = torch.linalg.vector_norm(rows, 2, dim=2).square().mean(dim=1) / w
            var = (mean_sq - mean * mean).clamp_min(0.0)
        mean_nc = mean.view(-1, 1).expand(n, c).reshape(-1)
        var_nc = var.view(-1, 1).expand(n, c).reshape(-1)
        weight_nc = self.weight.view(1, -1).expand(n, c).reshape(-1)
        bias_nc = self.bias.view(1, -1).expand(n, c).reshape(-1)
        y = F.batch_norm(x.reshape(1, n * c, h, w), mean_nc, var_nc, weight_nc, bias_nc, False, 0.0, self.eps)
        return y.reshape(n, c, h, w)


class _V2Export(nn.Module):
    """GeneratorV2 with upsampling sizes taken from tensor shapes, so that H and W stay dynamic.

    ``GeneratorV2.forward`` turns the skip sizes into Python ints, which a trace records
    as constants; this mirrors it (same modules, same order) without the conversion.
    The ONNX tests compare it with the eager model at two input sizes.
    """

    def __init__(self, model: GeneratorV2) -> None:
        super().__init__()
        self.inner = model

    def _up(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.inner.align_corners:
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] → same; H and W multiples of 4."""
        m = self.inner
        half = m.block_a(x)
        out = m.block_c(m.block_b(half))
        out = m.block_d(self._up(out, half))
        out = m.block_e(self._up(out, x))
        result: torch.Tensor = m.out_layer(out)
        return result


class _MatMulSkip(nn.Module):
    """A 1×1 convolution on the 3-channel input photo, written as a MatMul for export.

    onnxruntime's NCHWc layout pass turns the lite models' colour skip (``Conv2d(3, 3, 1)``
    on the input) into a blocked convolution whose output is padded to 16 channels on
    AVX-512 (8 on AVX2); and since it depends only on the input, the skip runs first and
    its padded output stays alive through the whole network: 45 MB at 1024×684, measured
    as a 268 → 223 MB drop in the graph's memory rise once it is a MatMul, which runs at
    the end on 3 channels. Same function (the ONNX tests compare with eager).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        assert conv.bias is not None  # GeneratorLite builds it with bias=True
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0].clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().view(1, -1, 1).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, 3, H, W): per-pixel ``weight @ rgb + bias``."""
        n, c, h, w = x.shape
        y = torch.matmul(self.weight, x.reshape(n, c, h * w)) + self.bias
        return y.reshape(n, -1, h, w)


class StatsFeed:
    """Holds the frozen statistics while a fixed-statistics graph is traced."""

    def __init__(self) -> None:
        self.stats: torch.Tensor | None = None


def _is_norm(mod: nn.Module) -> bool:
    is_gn1 = isinstance(mod, nn.GroupNorm) and mod.num_groups == 1 and mod.affine
    return isinstance(mod, FastGroupNorm) or is_gn1


def exportable(model: nn.Module, feed: StatsFeed | None = None) -> nn.Module:
    """A float32, CPU, gradient-free copy of ``model`` whose norms export to fast ONNX.

    Args:
        model: the generator.
        feed: for a fixed-statistics graph: the norms read their statistics from it, each
            at its index in module order (the order :func:`animecli.inference.tiling.record_stats` uses).
    """
    clone = copy.deepcopy(model).to("cpu", torch.float32).requires_grad_(False).eval()
    clone = clone.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    order = {id(m): i for i, m in enumerate(m for m in clone.modules() if _is_norm(m))}
    for mod in list(clone.modules()):
        for name, child in list(mod.named_children()):
            if _is_norm(child):
                setattr(mod, name, ExportGroupNorm(child, feed, order[id(child)]))
    if isinstance(clone, GeneratorLite):
        setattr(clone, "skip", _MatMulSkip(clone.skip))  # noqa: B010  (the attribute is typed Conv2d)
    # GeneratorV2TF's own upsampling already keeps H and W dynamic (and is not _V2Export's).
    v2 = isinstance(clone, GeneratorV2) and not isinstance(clone, GeneratorV2TF)
    wrapped: nn.Module = _V2Export(clone) if v2 else clone
    return wrapped.eval()


def has_fixed_stats_graph(model: nn.Module) -> bool:
    """Whether a fixed-statistics (tiling) graph can be exported: every whole-image layer is a
    one-group norm. AnimeGANv3's LADE (per-channel statistics of two tensors) and its attention
    softmax have none: their tiles run in eager PyTorch with frozen statistics."""
    return not any(isinstance(m, (LADE, ExternalAttention)) for m in model.modules())


class _FixedStatsExport(nn.Module):
    """A generator whose norms take their (mean, var) from a second input, shaped (L, 2)."""

    def __init__(self, net: nn.Module, feed: StatsFeed) -> None:
        super().__init__()
        self.net = net
        self.feed = feed

    def forward(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        self.feed.stats = stats
        try:
            out: torch.Tensor = self.net(x)
        finally:
            self.feed.stats = None
        return out


def count_norms(model: nn.Module) -> int:
    """Number of whole-image norm layers (rows of a fixed-statistics graph's ``stats`` input)."""
    return sum(1 for m in model.modules() if _is_norm(m))


def export_onnx(model: nn.Module, sample_size: int = 64, fixed_stats: bool = False) -> bytes:
    """Export the generator to ONNX (opset 17) with dynamic batch, height and width.

    Args:
        model: the generator (any device/dtype; a float32 CPU copy is exported).
        sample_size: side of the dummy input used for tracing (a multiple of 4).
        fixed_stats: export the tiling graph: a second input ``stats`` (L, 2) float32 holds
            every norm's whole-image (mean, var), in module order, used instead of the input's.

    Returns:
        The serialised ONNX model, input ``input`` (and ``stats``) and output ``output``,
        both (N, 3, H, W) float32 in [-1, 1].
    """
    x = torch.zeros(1, 3, sample_size, sample_size)
    dyn = {0: "n", 2: "h", 3: "w"}
    args: tuple[torch.Tensor, ...] = (x,)
    names = ["input"]
    if fixed_stats:
        feed = StatsFeed()
        net: nn.Module = _FixedStatsExport(exportable(model, feed), feed)
        args = (x, torch.ones(count_norms(model), 2))
        names = ["input", "stats"]
    else:
        net = exportable(model)
    return _export(net, args, names, {"input": dyn, "output": dyn})


class _Encoder(nn.Module):
    def __init__(self, net: GeneratorLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)


class _Decoder(nn.Module):
    def __init__(self, net: GeneratorLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net.decode(feats, x)


def can_split(model: nn.Module) -> bool:
    """Whether :func:`export_onnx_split` applies: a generator whose decoder has no whole-image
    norms (for a built model, what :func:`animecli.models.spec.has_local_decoder` says of its arch)."""
    return isinstance(model, GeneratorLite) and model.local_decoder


def export_onnx_split(model: nn.Module, sample_size: int = 64) -> tuple[bytes, bytes]:
    """Export the encoder and the decoder of a ``lite3`` generator as two graphs.

    The decoder has no whole-image norms, so :class:`~animecli.inference.ort_session.OrtSession` can run it
    on bands of rows (same result; far less memory on large photos).

    Args:
        model: a generator for which :func:`can_split` is true.
        sample_size: side of the dummy input used for tracing (a multiple of 4).

    Returns:
        The encoder (input ``input`` (N, 3, H, W) float32 in [-1, 1], output ``features``
        (N, C, H/4, W/4)) and the decoder (inputs ``features`` and ``input``, output
        ``output`` (N, 3, H, W) float32 in [-1, 1]).
    """
    if not can_split(model):
        raise ValueError("only a generator with a norm-free decoder (lite3) can be split")
    net = exportable(model)
    assert isinstance(net, GeneratorLite)
    x = torch.zeros(1, 3, sample_size, sample_size)
    with torch.no_grad():
        feats = net.encode(x)
    dyn = {0: "n", 2: "h", 3: "w"}
    fdyn = {0: "n", 2: "fh", 3: "fw"}
    encoder = _export(_Encoder(net), (x,), ["input"], {"input": dyn, "features": fdyn}, output="features")
    decoder = _export(_Decoder(net), (feats, x), ["features", "input"],
                      {"features": fdyn, "input": dyn, "output": dyn})
    return encoder, decoder


def _export(net: nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
            dynamic_axes: dict[str, dict[int, str]], output: str = "output") -> bytes:
    with tempfile.TemporaryDirectory(prefix="animecli-export-") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes (handled) and deprecations
        path = Path(tmp) / "model.onnx"
        # The TorchScript-based exporter: the dynamo one needs onnxscript and gives no faster graph here.
        torch.onnx.export(
            net, args, str(path), dynamo=False, opset_version=OPSET, input_names=names,
            output_names=[output], dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
        return path.read_bytes()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, shapes, float32 values): a cache key for weights
    that did not come from a file."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# int8 calibration


def calibration_images(
    folder: Path | None, size: int = CALIBRATION_SIZE, multiple: int = 4, limit: int = 16
) -> list[torch.Tensor]:
    """Photos for int8 calibration, as model inputs.

    Args:
        folder: a folder of photos (``None`` = the bundled examples).
        size: long side they are scaled to (LANCZOS).
        multiple: H and W are padded to a multiple of this.
        limit: at most this many photos (sorted by name).

    Returns:
        (1, 3, H, W) float32 tensors in [-1, 1].

    Raises:
        SetupError: no folder or no readable photos in it.
    """
    from animecli.inference.tensors import array_to_tensor, pad_batch, to_model_range
    from animecli.io.photos import bundled_photos_dir, photo_files, read_photos
    from animecli.io.transforms import prepare

    if folder is not None and not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise SetupError(f"--calibration {folder} {what}; pass a folder of a few of your photos")
    folder = folder if folder is not None else bundled_photos_dir()
    if folder is None or not folder.is_dir():
        raise SetupError(
            "--backend int8 calibrates on real photos, and the bundled examples/ folder is not installed "
            "here; pass --calibration DIR (a few of your photos)"
        )
    out = []
    # The first `limit` photo files, of which the unreadable ones are passed over.
    for _, rgb in read_photos(photo_files(folder)[:limit], lambda img: array_to_tensor(prepare(img, size).rgb)):
        out.append(pad_batch(to_model_range(rgb.unsqueeze(0), torch.float32), multiple))
    if not out:
        raise SetupError(f"no readable photos in {folder} for int8 calibration; pass --calibration DIR")
    return out


def _calibration_key(images: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for x in images:
        h.update(str(tuple(x.shape)).encode())
        h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def quantize_int8(fp32_onnx: bytes, images: Sequence[torch.Tensor], workdir: Path) -> bytes:
    """Statically quantise every convolution of an exported generator.

    QDQ format, int8 symmetric per-channel weights, uint8 activations, min/max
    calibration over ``images``. ``reduce_range`` (7-bit weights) because on CPUs
    without VNNI (AVX2, AVX-512 before Cascade Lake) the u8×s8 multiply-add instruction
    saturates with full-range weights and costs several dB (measured: docs/speed.md).
    Norms, activations and resizes stay float32.

    Args:
        fp32_onnx: the float32 model from :func:`export_onnx`.
        images: (1, 3, H, W) float32 calibration inputs in [-1, 1].
        workdir: a folder for the intermediate files.

    Returns:
        The quantised ONNX model.
    """
    require_onnxruntime(Backend.INT8)
    try:
        from onnxruntime import quantization as q
    except ImportError:  # the quantiser needs the onnx package, which onnxruntime does not pull in
        raise SetupError(f"--backend int8 needs the onnx package to quantise the model; {ONNX_HINT}") from None

    class _Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            x = next(self._it, None)
            return None if x is None else {"input": x.numpy()}

    src = workdir / "fp32.onnx"
    out = workdir / "int8.onnx"
    src.write_bytes(fp32_onnx)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a "consider pre-processing" warning per call
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            q.quantize_static(
                str(src), str(out), _Reader(), quant_format=q.QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                per_channel=True, reduce_range=True, activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
                calibration_cache_path=None, extra_options={"CalibTensorRangeSymmetric": False},
            )
    finally:
        root.setLevel(level)
    return out.read_bytes()


# ---------------------------------------------------------------------------------------------
# onnxruntime runner


class OrtRunner(OrtSession):
    """:class:`~animecli.inference.ort_session.OrtSession` (same arguments) for tensors, for the PyTorch engine."""

    memory_format = torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 in [-1, 1] (any device/layout) → same, float32, on the CPU."""
        return torch.from_numpy(self.run_array(x.detach().to("cpu", torch.float32).contiguous().numpy()))

    def run_fixed(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """One tile with frozen statistics (see :meth:`~animecli.inference.ort_session.OrtSession.run_fixed_array`)."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run_fixed_array(arr, stats.detach().to("cpu", torch.float32).contiguous().numpy()))


def make_runner(
    model: nn.Module,
    backend: Backend,
    *,
    threads: int = 0,
    digest: str | None = None,
    arch_key: str = "",
    calibration: Path | None = None,
    multiple: int = 4,
    memory_format: torch.memory_format = torch.channels_last,
    compile: bool = False,
) -> Runner:
    """Build the runner for a resolved backend.

    Args:
        model: the generator, ready for PyTorch (device, dtype, memory format, eval).
        backend: a resolved backend (see :func:`resolve_backend`).
        threads: onnxruntime intra-op threads (0 = its default).
        digest: SHA-256 of the weights file (``None`` = hash the state dict).
        arch_key: architecture and options, part of the cache key (e.g. ``lite/1.0/noalign``).
        calibration: int8 calibration photos (``None`` = the bundled examples).
        multiple: the model's size multiple (calibration images are padded to it).
        memory_format: input layout for the PyTorch runners.
        compile: ``torch.compile`` the eager model (see :class:`TorchRunner`).

    Raises:
        SetupError: onnxruntime missing, or no calibration photos for int8.
        UsageError: ``compile`` with a backend other than eager.
    """
    if compile and backend is not Backend.EAGER:
        raise UsageError(f"--compile compiles the eager PyTorch model; drop --backend {backend.value} or --compile")
    if backend in (Backend.EAGER, Backend.TRACED):
        return TorchRunner(model, backend, memory_format, compile=compile)
    if backend not in (Backend.ONNX, Backend.INT8):
        raise ValueError(f"resolve the backend first (got {backend.value})")
    require_onnxruntime(backend)
    key = cache_key(arch_key or type(model).__name__)
    digest = digest or model_digest(model)
    paths = compiled_paths(digest, key)
    if backend is Backend.ONNX:
        fixed_paths = paths

        def fixed_graph() -> bytes:
            return cached(fixed_paths.fixed, lambda: export_onnx(model, fixed_stats=True))

        tiles: _FixedGraph | None = None
        if has_fixed_stats_graph(model):
            tiles = _FixedGraph(fixed_graph, lambda: discard([fixed_paths.fixed]))
        if not can_split(model):
            return _open_runner(lambda: cached(paths.fp32, lambda: export_onnx(model)), [paths.fp32],
                                backend, threads, tiles)
        # The whole graph is not needed (int8 exports it when asked for). Exported once for
        # both parts (the first run caches them; the torch-free engine needs both).
        parts: list[bytes] = []

        def part(i: int) -> bytes:
            if not parts:
                parts.extend(export_onnx_split(model))
            return parts[i]

        def split() -> SplitGraph:
            return SplitGraph(cached(paths.encoder, lambda: part(0)), cached(paths.decoder, lambda: part(1)))

        return _open_runner(split, [paths.encoder, paths.decoder], backend, threads, tiles)
    fp32_path = paths.fp32
    images = calibration_images(calibration, CALIBRATION_SIZE, multiple)
    paths = compiled_paths(digest, key, _calibration_key(images))

    def build() -> bytes:
        with tempfile.TemporaryDirectory(prefix="animecli-int8-") as tmp:
            return quantize_int8(cached(fp32_path, lambda: export_onnx(model)), images, Path(tmp))

    return _open_runner(lambda: cached(paths.int8, build), [paths.int8, fp32_path], backend, threads)


@dataclass(frozen=True)
class _FixedGraph:
    """The tiling graph of a runner: how to make it, and how to delete a damaged cached copy."""

    make: Callable[[], bytes]
    discard: Callable[[], None]


def _open_runner(
    graph: Callable[[], bytes | SplitGraph], files: list[Path], backend: Backend, threads: int,
    tiles: _FixedGraph | None = None,
) -> OrtRunner:
    """The session over ``graph()``; if onnxruntime refuses the cached ``files`` (damaged on
    disk), they are deleted and made again, once (the tiling graph likewise, when first used)."""
    def runner() -> OrtRunner:
        if tiles is None:
            return OrtRunner(graph(), backend, threads)
        return OrtRunner(graph(), backend, threads, tiles.make, tiles.discard)

    try:
        return runner()
    except GraphError:
        discard(files)
        return runner()
