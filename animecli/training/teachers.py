"""ONNX teacher generators (see ``shared/teachers/README.md`` for their conventions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from animecli.errors import SetupError


@dataclass(frozen=True)
class TeacherInfo:
    """What a teacher file accepts.

    Attributes:
        fixed_size: the only (H, W) it accepts, or ``None`` for any size.
        multiple: H and W must be multiples of this.
        min_size: smallest H and W accepted.
    """

    fixed_size: tuple[int, int] | None
    multiple: int
    min_size: int


# Facts from shared/teachers/README.md, keyed by file name.
KNOWN_TEACHERS: dict[str, TeacherInfo] = {
    "animeganv2_hayao_256.onnx": TeacherInfo((256, 256), 8, 256),
    "animeganv3_hayao_512.onnx": TeacherInfo((512, 512), 8, 512),
    "animeganv3_shinkai.onnx": TeacherInfo(None, 8, 256),
    "animeganv3_cute.onnx": TeacherInfo(None, 16, 256),
}


class OnnxTeacher:
    """Runs one teacher with onnxruntime.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads for onnxruntime (0 = its default).
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise SetupError(
                "distillation needs onnxruntime; install it with: pip install 'animecli[train]'"
            ) from exc
        if not path.is_file():
            raise SetupError(f"{path}: teacher not found; pass the path of an .onnx teacher")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.info = KNOWN_TEACHERS.get(path.name, TeacherInfo(None, 16, 256))
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise.

        Args:
            x: (N, 3, H, W) float32 RGB in [-1, 1].

        Returns:
            (N, 3, H, W) float32 RGB in [-1, 1]. Batches are run one image at
            a time because most teachers accept batch 1 only.
        """
        outs = []
        for img in x:
            nhwc = img.permute(1, 2, 0).unsqueeze(0).contiguous().numpy()
            (y,) = self.session.run(None, {self.input_name: nhwc})[:1]
            outs.append(torch.from_numpy(y).permute(0, 3, 1, 2).clamp(-1.0, 1.0))
        return torch.cat(outs)
