"""onnxruntime without torch: the cached graphs' names and a CPU session over numpy arrays.

:mod:`animecli.inference.backends` exports and quantises the graphs (with torch) and wraps
:class:`OrtSession` for tensors; :mod:`animecli.inference.ort_engine` runs a cached graph with
numpy alone, so that a CPU conversion never imports torch (about 220–280 MB of
resident memory, docs/speed.md).

This module never prints and never exits.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from animecli.dirs import cache_dir
from animecli.errors import GraphError, SetupError, first_line
from animecli.inference.staged import EPS_KEY, MapPool, StagedGraph, run_staged
from animecli.options import Backend

OPSET = 17
# Bump when the exported graph changes (norm rewrite, export options): old cache entries are ignored.
# e2: the lite models' colour skip exported as a MatMul (_MatMulSkip); e3: the imported archs'
# asymmetric upsampling as one Resize node.
EXPORT_VERSION = "e3"
ONNX_HINT = "pip install 'animecli[onnx]' (or: pip install onnxruntime onnx)"

Float32Array = npt.NDArray[np.float32]


def onnxruntime_available() -> bool:
    """True if ``import onnxruntime`` works."""
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True


def require_onnxruntime(backend: Backend) -> ModuleType:
    """Import onnxruntime, or explain how to install it.

    Raises:
        SetupError: onnxruntime is not installed (exit 2).
    """
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        raise SetupError(
            f"--backend {backend.value} needs onnxruntime, which is not installed; {ONNX_HINT}, "
            "or use --backend eager"
        ) from None
    # Its own warnings (e.g. "Failed to persist telemetry device ID" under a read-only HOME)
    # would land, colour codes and all, in the run's log; errors still come through.
    ort.set_default_logger_severity(3)
    return ort


@dataclass(frozen=True)
class CompiledPaths:
    """Where the cached graphs of one model live.

    Attributes:
        fp32: the exported float32 model.
        int8: the quantised model (its name also carries the calibration set's digest).
        fixed: the float32 tiling graph (whole-image statistics as an input; see
            :func:`animecli.inference.backends.onnx_export.export_onnx`).
        carry: the float32 video graph (statistics carried from the previous frame; see
            :func:`animecli.inference.backends.onnx_export.export_onnx_carry`).
        encoder, decoder: the float32 model in two parts, for a model whose decoder
            has no whole-image norms (see :class:`SplitGraph`).
        staged: the prefix of an AnimeGANv3 model's stage graphs (:meth:`stage_file`).
    """

    fp32: Path
    int8: Path
    fixed: Path
    encoder: Path
    decoder: Path
    carry: Path
    staged: Path

    def stage_file(self, name: str) -> Path:
        """The cached graph of one stage (:mod:`animecli.inference.staged`)."""
        return self.staged.with_name(f"{self.staged.name}-{name}.onnx")


def cache_key(arch_key: str) -> str:
    """An architecture key (``lite3/1.0/noalign``) as it appears in cache file names."""
    return arch_key.replace("/", "_").replace(".", "p")


def compiled_paths(digest: str, arch_key: str, calibration_key: str = "") -> CompiledPaths:
    """Cache paths for a model with weights digest ``digest`` and (file-name) architecture key ``arch_key``."""
    folder = cache_dir() / "compiled"
    stem = f"{digest[:16]}-{arch_key}-{EXPORT_VERSION}-opset{OPSET}"
    return CompiledPaths(folder / f"{stem}.onnx", folder / f"{stem}-int8-{calibration_key or 'x'}.onnx",
                         # "stats": the flat (S,) statistics input (was (L, 2) in "-fixedstats" files)
                         folder / f"{stem}-stats.onnx", folder / f"{stem}-encoder.onnx",
                         folder / f"{stem}-decoder.onnx", folder / f"{stem}-carry.onnx",
                         # "s4": the stage graphs' version (their cut points, inputs and outputs;
                         # s2: d5 computes e0 again from x; s3: inputs come with their columns
                         # padded, the tiny generator's plan; s4: UP stages return their 4 phases)
                         folder / f"{stem}-staged-s4")


def nonempty_file(path: Path) -> bool:
    """True if ``path`` is a file with something in it (a cached graph worth reading)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


SHRINK_WINDOW = 16
# The stage maps a staged session keeps between images (see run_array): a 1024² photo's need
# 164 MiB (the default --max-size); after an outlier above this they are given back.
STAGED_KEEP_BYTES = 256 * 2**20
SHRINK_FACTOR = 1.25

# The decoder of a split graph runs on bands of about this many pixels (rows × width).
BAND_PIXELS = 256 * 1024
MIN_BAND_ROWS = 32
# Rows of context each band carries above and below (full resolution, a multiple of 4). The
# lite3 decoder's receptive field, counted back from an output row: up2's 7×7 and 3×3 convs
# (4 rows), the ×2 bilinear resize (≤ 3), reduce's 3×3 and up1's two 3×3 at half resolution
# (6), the first ×2 resize at quarter resolution (4): 17. The tests check that bands give
# exactly the whole image's output, and that too small a margin does not.
BAND_HALO = 20


@dataclass(frozen=True)
class SplitGraph:
    """A generator exported in two parts (:func:`animecli.inference.backends.onnx_export.export_onnx_split`).

    Attributes:
        encoder: input ``input`` (N, 3, H, W) float32 in [-1, 1] → ``features``
            (N, C, H/4, W/4).
        decoder: inputs ``features`` and ``input`` → ``output`` (N, 3, H, W) in [-1, 1].
            It has no whole-image norms, so it can run on bands of rows.
    """

    encoder: bytes
    decoder: bytes


def band_rows(height: int, width: int) -> int:
    """Rows per decoder band for an image of this size (≥ ``height``: no bands)."""
    return max(MIN_BAND_ROWS, BAND_PIXELS // max(1, width) // 4 * 4)


_shared_arena: list[bool] = []  # registered once per process (onnxruntime refuses a second one)


def _register_shared_arena(ort: ModuleType) -> bool:
    """Register one arena for the split sessions to share; whether it is available.

    The encoder's maps are freed before the decoder runs, so one arena lets the decoder
    reuse them; with an arena per session both would stay resident. Grown in powers of
    two (issue 23; see below).
    """
    if not _shared_arena:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # Issue 23: grown in powers of two (kNextPowerOfTwo = 0), not by what is asked (1).
            # On a folder of mixed sizes each new shape's requests that did not fit a free chunk
            # added a region of exactly that size, and such regions fragment; fewer, larger ones
            # are reused across shapes. Outputs are unchanged. Its effect on peak RSS is not
            # proven yet: side by side in one run it measured within noise (docs/speed.md).
            ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 0}))
            _shared_arena.append(True)
        except Exception:  # an older onnxruntime, or one registered by someone else: separate arenas
            _shared_arena.append(False)
    return _shared_arena[0]


@dataclass(frozen=True)
class GraphSource:
    """A graph a session opens on first use (tiling, video), and how to delete a damaged cached copy.

    Attributes:
        make: returns the graph's bytes (from the cache, or exported).
        discard: deletes the cached copy; called once if onnxruntime refuses it, before
            ``make`` makes it again (``None``: the refusal is raised).
    """

    make: Callable[[], bytes]
    discard: Callable[[], None] | None = None


class _LazySession:
    """A session over a :class:`GraphSource`, opened on first use."""

    def __init__(self, source: GraphSource, open_session: Callable[[bytes], Any]) -> None:
        self._source = source
        self._open = open_session
        self.session: Any = None

    def get(self) -> Any:
        if self.session is None:
            try:
                self.session = self._open(self._source.make())
            except GraphError:
                if self._source.discard is None:
                    raise
                self._source.discard()  # a damaged cache file: make it again, once
                self.session = self._open(self._source.make())
        return self.session


class OrtSession:
    """An onnxruntime CPU session over an exported generator, numpy in and out.

    Args:
        model_bytes: the ONNX model.
        backend: ``onnx`` or ``int8`` (for reporting).
        threads: intra-op threads (0 = onnxruntime's default: one per physical core).
        fixed_graph: the fixed-statistics graph for tiling (opened on first use); ``None`` =
            this session cannot run tiles (:attr:`can_tile` is false).
        carry_graph: the video graph (statistics carried across frames); ``None`` = none
            (:attr:`can_carry` is false).
    """

    def __init__(
        self, model: bytes | SplitGraph | StagedGraph, backend: Backend, threads: int = 0,
        fixed_graph: GraphSource | None = None, carry_graph: GraphSource | None = None,
    ) -> None:
        self._ort = require_onnxruntime(backend)
        self._options = self._session_options(threads)
        self.backend = backend
        self.split = isinstance(model, SplitGraph)
        self.staged: StagedGraph | None = None
        self._stages: dict[str, Any] = {}
        self._pool = MapPool()
        if isinstance(model, (SplitGraph, StagedGraph)):
            shared = self._session_options(threads)
            if _register_shared_arena(self._ort):
                shared.add_session_config_entry("session.use_env_allocators", "1")
        if isinstance(model, SplitGraph):
            self.session = self._open(model.encoder, shared)
            self._decoder = self._open(model.decoder, shared)
        elif isinstance(model, StagedGraph):
            # One arena for all stages: each band's work reuses what the previous band freed.
            self._stages = {stage.name: self._open(model.graphs[stage.name], shared) for stage in model.plan}
            self.session = self._stages[model.plan[-1].name]
            eps = model.eps if model.eps is not None else self._stored_eps(self.session)
            self.staged = StagedGraph(model.graphs, eps, model.plan)
        else:
            self.session = self._open(model, self._options)
        def open_graph(data: bytes) -> Any:
            return self._open(data, self._options)

        self._fixed = None if fixed_graph is None else _LazySession(fixed_graph, open_graph)
        self._carry = None if carry_graph is None else _LazySession(carry_graph, open_graph)
        # The arena keeps what the largest input so far needed; after an input much larger
        # than the recent ones, give that back (see _shrink_after).
        self._recent: deque[int] = deque(maxlen=SHRINK_WINDOW)
        self._shrink = self._ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @staticmethod
    def _stored_eps(session: Any) -> float:
        """The LADE eps a stage graph carries in its metadata.

        Raises:
            GraphError: it carries none (a graph from another version; deleted and made again).
        """
        try:
            return float(session.get_modelmeta().custom_metadata_map[EPS_KEY])
        except (KeyError, ValueError):
            raise GraphError(f"a cached stage graph has no {EPS_KEY} entry; delete {cache_dir() / 'compiled'} "
                             "and rerun (it is compiled again)") from None

    @property
    def can_tile(self) -> bool:
        """Whether :meth:`run_fixed_array` is available."""
        return self._fixed is not None

    @property
    def can_carry(self) -> bool:
        """Whether :meth:`run_carry_array` is available."""
        return self._carry is not None

    def _open(self, model_bytes: bytes, options: Any) -> Any:
        """An onnxruntime session.

        Raises:
            GraphError: onnxruntime refused the bytes (a damaged cache file; the callers
                delete it and compile the model again).
        """
        try:
            return self._ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own types (InvalidProtobuf, InvalidGraph, Fail …)
            first = first_line(exc, 200)
            raise GraphError(f"onnxruntime could not load a compiled graph ({first}); delete "
                             f"{cache_dir() / 'compiled'} and rerun (it is compiled again)") from None

    def _session_options(self, threads: int) -> Any:
        ort = self._ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(0, threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The arena stays on: without it every large activation is a fresh mmap whose pages
        # fault in on each run (measured 2-4x slower at 1024 px on 2 cores). Memory patterns
        # only apply to fixed shapes; photo sizes vary.
        so.enable_cpu_mem_arena = True
        so.enable_mem_pattern = False
        so.log_severity_level = 3
        # Idle pool threads would otherwise spin for a while after each run, taking the cores
        # from the loader thread and from JPEG encoding (and from other processes).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so

    def _shrink_after(self, pixels: int) -> bool:
        """Whether to shrink the arena after a run on ``pixels`` input pixels.

        Shrinking returns every free arena chunk to the OS, so the next run faults
        its pages in again (slower). Doing it after each run cost 15–70 % on
        photos of one size; never doing it let RSS ratchet up to the largest
        photo ever seen (+54 MB over the 2,000-file soak). Only an input larger
        than SHRINK_FACTOR × the median of the recent ones triggers it, so a
        folder of same-size photos never pays and an outlier does not stay
        resident.
        """
        recent = sorted(self._recent)
        self._recent.append(pixels)
        if not recent:
            return False
        return pixels > SHRINK_FACTOR * recent[len(recent) // 2]

    def run_array(self, x: Float32Array) -> Float32Array:
        """(N, 3, H, W) float32 C-contiguous in [-1, 1] → same shape, float32, in [-1, 1]."""
        n = int(x.shape[0])
        if n > 1 and x.size // 3 > BAND_PIXELS:
            # On a CPU a batch larger than a band buys no speed and holds N images' maps
            # (converting 4 × 1024² photos with --batch-size 4: 1.22 GB peak in one call, 0.53 GB
            # one by one, as fast; at 4 × 512² 0.99× the time; only batches of small images gain,
            # 6–15 % at 4 × 256² and 128²; docs/speed.md).
            return np.concatenate([self.run_array(x[i : i + 1]) for i in range(n)])
        if n > 1 and self.staged is not None:
            return np.concatenate([self.run_array(x[i : i + 1]) for i in range(n)])  # stages run one image
        options = self._shrink if self._shrink_after(int(x.size)) else None
        if self.split:
            return self._run_split(x, options)
        if self.staged is not None:
            # Issue 23: no shrink request. The arena holds one band's work, whatever the image's
            # size, and the pool the largest image's maps; giving them back after each outlier
            # (as for the whole graph) made the per-file RSS swing by ~300 MiB on the mixed folder
            # and cost page faults (14 photos: 25.2 s of inference against 21.2 s kept).
            y = run_staged(self._stages, self.staged, x, pool=self._pool)
            if options is not None and self._pool.resident_bytes > STAGED_KEEP_BYTES:
                self._pool.clear()  # an outlier larger than a default-size photo: not kept
            return y
        (y,) = self.session.run(["output"], {"input": x}, options)
        out: Float32Array = y
        return out

    def _run_split(self, x: Float32Array, options: Any) -> Float32Array:
        """The encoder on the whole image, then the decoder band by band.

        Only one band's full-resolution maps exist at a time; each band carries
        ``BAND_HALO`` rows of context that are computed and dropped, so the result is the
        whole image's (the tests compare them).
        """
        (feats,) = self.session.run(["features"], {"input": x}, options)
        h, w = int(x.shape[2]), int(x.shape[3])
        rows = band_rows(h, w)
        if rows >= h or h % 4:
            # Issue 23: the shrink request goes to the decoder's (last) run too; given to the
            # encoder only, the decoder's band maps stayed in the shared arena.
            (y,) = self._decoder.run(["output"], {"features": feats, "input": x}, options)
            whole: Float32Array = y
            return whole
        out: Float32Array = np.empty_like(x)
        for top in range(0, h, rows):
            bottom = min(h, top + rows)
            a, b = max(0, top - BAND_HALO), min(h, bottom + BAND_HALO)  # multiples of 4
            feed = {"features": np.ascontiguousarray(feats[:, :, a // 4 : b // 4]),
                    "input": np.ascontiguousarray(x[:, :, a:b])}
            last = bottom >= h  # issue 23: shrink after the last band (see above)
            (band,) = self._decoder.run(["output"], feed, options if last else None)
            out[:, :, top:bottom] = band[:, :, top - a : bottom - a]
            del band, feed
        return out

    def run_fixed_array(self, x: Float32Array, stats: Float32Array) -> Float32Array:
        """One tile with frozen statistics.

        Args:
            x: (N, 3, h, w) float32 in [-1, 1].
            stats: (S,) float32, every whole-image layer's statistics, flattened in module order
                (:func:`animecli.inference.backends.onnx_export.stats_size`).

        Returns:
            (N, 3, h, w) float32 in [-1, 1].
        """
        if self._fixed is None:
            raise ValueError("this session has no fixed-statistics graph (check can_tile)")
        (y,) = self._fixed.get().run(["output"], {"input": x, "stats": stats})
        out: Float32Array = y
        return out

    def run_carry_array(self, x: Float32Array, stats: Float32Array, blend: float) -> tuple[Float32Array, Float32Array]:
        """One video frame with statistics carried from the previous one.

        Args:
            x: (1, 3, H, W) float32 in [-1, 1].
            stats: (S,) float32, the statistics the previous frame used (anything when ``blend`` is 0).
            blend: their weight in the mixture with this frame's own, in [0, 1).

        Returns:
            The frame (1, 3, H, W) float32 in [-1, 1] and the statistics it used, (S,).
        """
        if self._carry is None:
            raise ValueError("this session has no video graph (check can_carry)")
        options = self._shrink if self._shrink_after(int(x.size)) else None
        y, used = self._carry.get().run(["output", "stats_out"], {
            "input": x, "stats": stats, "blend": np.full((1,), blend, np.float32)}, options)
        return y, used

    def release_tile_memory(self) -> None:
        """Give the tiling graph's arena back to the OS (call after the last tile of an image).

        Tiled images are the largest a run sees; without this their tiles' activations
        stayed resident through the image's encoding and the rest of the run.
        """
        if self._fixed is None or self._fixed.session is None:
            return
        session = self._fixed.session
        size = int(next(i for i in session.get_inputs() if i.name == "stats").shape[0])
        side = 64  # the smallest input every arch takes (1/16 levels' reflect pads need 2+ px)
        feed = {"input": np.zeros((1, 3, side, side), np.float32), "stats": np.ones((size,), np.float32)}
        session.run(["output"], feed, self._shrink)
