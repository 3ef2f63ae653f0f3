"""Importing the AnimeGAN generators that are published as ONNX files onto our own modules.

``import_onnx(path)`` reads the file (needs the ``onnx`` package, an optional
extra), recognises which generator it holds from the graph's structure, and
loads its weights into :mod:`animecli.models.animeganv3` modules with
``strict=True``; :func:`check_against_onnxruntime` then compares the two once.

Temporary location; it moves under ``animecli.weights`` later, so it imports
only :mod:`animecli.models` and :mod:`animecli.errors` of ours.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from animecli.models.spec import Arch
from animecli.weights.onnx_import.check import check_against_onnxruntime, psnr, run_onnxruntime
from animecli.weights.onnx_import.graph import load_graph, strip_activation_qdq
from animecli.weights.onnx_import.mapping import choose, state_dict_for
from animecli.weights.onnx_import.recognise import Layout, NormKind, read_facts

__all__ = [
    "ImportedGenerator",
    "Layout",
    "check_against_onnxruntime",
    "import_onnx",
    "psnr",
    "run_onnxruntime",
    "strip_activation_qdq",
]


@dataclass(frozen=True)
class ImportedGenerator:
    """A generator read from an ONNX file, with what the file says about it.

    Attributes:
        module: our module with the file's weights, eval mode, float32; input
            (N, 3, H, W) RGB in [-1, 1], output the same shape in [-1, 1],
            any H, W that are multiples of ``size_multiple`` (also for fixed-size files).
        arch: the generator family.
        layout: the file's input/output layout (the module is always NCHW).
        input_name, output_name: the file's tensor names.
        size_multiple: 2 ** (stride-2 convs in the graph).
        fixed_size: (H, W) the file itself is limited to, or ``None``.
        has_norms: the graph normalises activations.
        quantized: the file stores 8-bit (QDQ) weights.
        sha256: hex digest of the file's bytes.
    """

    module: nn.Module
    arch: Arch
    layout: Layout
    input_name: str
    output_name: str
    size_multiple: int
    fixed_size: tuple[int, int] | None
    has_norms: bool
    quantized: bool
    sha256: str


def import_onnx(path: Path | str) -> ImportedGenerator:
    """Read ``path`` and return its generator as one of our modules.

    Raises:
        WeightsError: the file is unreadable, not ONNX, or not a generator we
            support (one line naming what it found and what is supported).
    """
    path = Path(path)
    graph = load_graph(path)
    facts = read_facts(graph, path)
    choice = choose(facts, path)
    module = choice.build()
    module.load_state_dict(state_dict_for(module, facts, path), strict=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ImportedGenerator(
        module=module,
        arch=choice.arch,
        layout=facts.layout,
        input_name=facts.input_name,
        output_name=facts.output_name,
        size_multiple=facts.size_multiple,
        fixed_size=facts.fixed_size,
        has_norms=facts.norm is not NormKind.NONE,
        quantized=any(n.op_type == "DequantizeLinear" for n in graph.nodes),
        sha256=digest,
    )
