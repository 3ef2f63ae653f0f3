"""The ONNX importer: recognition, exact mapping against onnxruntime, refusals, and the real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from animecli.errors import WeightsError  # noqa: E402
from animecli.models.animeganv3 import upsample2x_asymmetric  # noqa: E402
from animecli.models.spec import Arch  # noqa: E402
from animecli.weights.onnx_import import (  # noqa: E402
    Layout,
    check_against_onnxruntime,
    import_onnx,
    psnr,
    run_onnxruntime,
)
from tests import onnx_graphs as graphs  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEACHERS = SHARED / "teachers"
PHOTOS = SHARED / "photos" / "val"


def save(model: onnx.ModelProto, tmp_path: Path, name: str) -> Path:
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


CASES = {
    # name: (builder, arch, layout, size multiple, fixed size, has norms, check size)
    "v3_nhwc": (lambda: graphs.v3_graph(), Arch.V3, Layout.NHWC, 8, None, True, (32, 48)),
    "v3_nchw_fixed": (lambda: graphs.v3_graph(nhwc=False, size=(32, 40)), Arch.V3, Layout.NCHW, 8,
                      (32, 40), True, (32, 40)),
    "v3_fp16": (lambda: graphs.v3_graph(fp16=True), Arch.V3, Layout.NHWC, 8, None, True, (24, 32)),
    "v3_eps0": (lambda: graphs.v3_graph(eps=0.0, seed=5), Arch.V3, Layout.NHWC, 8, None, True, (32, 32)),
    "tiny": (lambda: graphs.v3_tiny_graph(), Arch.V3_TINY, Layout.NHWC, 16, None, True, (32, 48)),
    "tiny_no_norm_nchw": (lambda: graphs.v3_tiny_graph(final_norm=False, nhwc=False), Arch.V3_TINY,
                          Layout.NCHW, 16, None, False, (48, 32)),
    "v2_qdq": (lambda: graphs.v2_qdq_graph(), Arch.V2_TF, Layout.NHWC, 4, (32, 32), True, (32, 32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recognises_generator(case: str, tmp_path: Path) -> None:
    build, arch, layout, multiple, fixed, norms, _ = CASES[case]
    path = save(build(), tmp_path, case)
    g = import_onnx(path)
    assert (g.arch, g.layout, g.size_multiple, g.fixed_size, g.has_norms) == (arch, layout, multiple, fixed, norms)
    assert g.input_name == "image"
    assert g.output_name == onnx.load(str(path)).graph.output[0].name
    assert g.quantized is (arch is Arch.V2_TF)
    assert len(g.sha256) == 64
    assert g.module.size_multiple == multiple


@pytest.mark.parametrize("case", sorted(CASES))
def test_mapping_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    build, _, layout, _, _, _, size = CASES[case]
    path = save(build(), tmp_path, case)
    g = import_onnx(path)
    # The file's own float network: with activation QDQ removed for the 8-bit file.
    assert check_against_onnxruntime(path, g.module, size, layout, float_activations=True) > 90.0


def test_quantised_activations_are_what_the_float_module_leaves_out(tmp_path: Path) -> None:
    path = save(graphs.v2_qdq_graph(), tmp_path, "v2")
    g = import_onnx(path)
    on_file = check_against_onnxruntime(path, g.module, (32, 32), Layout.NHWC)
    on_float_graph = check_against_onnxruntime(path, g.module, (32, 32), Layout.NHWC, float_activations=True)
    assert on_file < on_float_graph - 20.0


def test_fixed_size_file_becomes_size_free(tmp_path: Path) -> None:
    path = save(graphs.v3_graph(size=(32, 32)), tmp_path, "fixed")
    g = import_onnx(path)
    with torch.inference_mode():
        out = g.module(torch.zeros(1, 3, 48, 64).uniform_(-1, 1))
    assert out.shape == (1, 3, 48, 64)
    assert float(out.abs().max()) <= 1.0


def test_wrong_weight_is_caught_by_the_check(tmp_path: Path) -> None:
    path = save(graphs.v3_tiny_graph(base=2), tmp_path, "tiny")
    g = import_onnx(path)
    with torch.no_grad():
        conv = g.module.enc[0][1]  # type: ignore[index]
        # Not a scaling: the final LADE would normalise that away.
        conv.weight.add_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.2)
    assert check_against_onnxruntime(path, g.module, (32, 32), Layout.NHWC) < 60.0


def test_upsample_matches_onnx_resize_asymmetric() -> None:
    x = torch.randn(1, 2, 3, 5)
    builder = graphs._Builder(0)
    y = builder.up("image")
    model = builder.model("image", y, [1, 2, 3, 5], [1, 2, 6, 10])
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])
    assert torch.allclose(upsample2x_asymmetric(x), ref, atol=1e-6)


def _refusal(path: Path) -> str:
    with pytest.raises(WeightsError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "supported" in message
    assert info.value.exit_code == 2
    return message


def test_refuses_classifier(tmp_path: Path) -> None:
    message = _refusal(save(graphs.classifier_graph(), tmp_path, "classifier"))
    assert "[1,10]" in message


def test_refuses_four_channel_input(tmp_path: Path) -> None:
    message = _refusal(save(graphs.v3_tiny_graph(in_channels=4), tmp_path, "rgba"))
    assert "4 channels" in message


def test_refuses_truncated_file(tmp_path: Path) -> None:
    data = save(graphs.v3_tiny_graph(), tmp_path, "whole").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    _refusal(cut)


def test_refuses_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 8)
    _refusal(junk)


def test_refuses_generator_with_unexpected_widths(tmp_path: Path) -> None:
    model = graphs.v3_tiny_graph()
    # Make the third conv's weight one output channel wider: no tiny generator has that.
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    wname = convs[2].input[1]
    init = next(t for t in model.graph.initializer if t.name == wname)
    arr = onnx.numpy_helper.to_array(init)
    import numpy as np

    init.CopyFrom(onnx.numpy_helper.from_array(np.concatenate([arr, arr[:1]]), wname))
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    assert "conv 2" in _refusal(path)


# --- the real files --------------------------------------------------------------------------------

REAL = {
    # file: (arch, size multiple, fixed size)
    "animeganv3_hayao_512.onnx": (Arch.V3, 8, (512, 512)),
    "animeganv3_shinkai.onnx": (Arch.V3, 8, None),
    "animeganv3_cute.onnx": (Arch.V3_TINY, 16, None),
    "animeganv2_hayao_256.onnx": (Arch.V2_TF, 4, (256, 256)),
}


def _photo(h: int, w: int) -> torch.Tensor:
    from PIL import Image

    photos = sorted(PHOTOS.glob("*.jpg"))
    if not photos:
        pytest.skip(f"no photos in {PHOTOS}")
    img = Image.open(photos[0]).convert("RGB")
    scale = max(h / img.height, w / img.width)
    img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    arr = torch.frombuffer(bytearray(img.crop((left, top, left + w, top + h)).tobytes()), dtype=torch.uint8)
    return arr.view(h, w, 3).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file(name: str) -> None:
    path = TEACHERS / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    arch, multiple, fixed = REAL[name]
    g = import_onnx(path)
    assert (g.arch, g.size_multiple, g.fixed_size, g.layout) == (arch, multiple, fixed, Layout.NHWC)
    size = fixed or (256, 384)
    x = _photo(*size)
    if arch is Arch.V2_TF:
        # The file rounds every activation to 8 bits; our float module matches its float graph.
        assert check_against_onnxruntime(path, g.module, size, g.layout, x, float_activations=True) > 90.0
        assert check_against_onnxruntime(path, g.module, size, g.layout, x) > 25.0
    else:
        assert check_against_onnxruntime(path, g.module, size, g.layout, x) > 90.0


@pytest.mark.shared
def test_psnr_helper_on_real_output() -> None:
    path = TEACHERS / "animeganv3_cute.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    x = _photo(256, 256)
    y = run_onnxruntime(path, x, Layout.NHWC)
    assert psnr(y, y) == float("inf") and psnr(y, x) < 40.0
