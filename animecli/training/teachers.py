"""ONNX teacher generators (see ``shared/teachers/README.md`` for their conventions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from animecli.errors import SetupError, UsageError, first_line
from animecli.weights.download import sha256_file


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
        if path.is_dir():
            raise UsageError(f"--teacher {path} is a folder; pass the .onnx teacher file inside it")
        if not path.is_file():
            raise UsageError(f"--teacher {path}: teacher not found; pass the path of an .onnx teacher")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own types (InvalidProtobuf, Fail, …)
            first = first_line(exc, 160)
            raise UsageError(f"--teacher {path}: onnxruntime cannot load it ({first}); pass an ONNX "
                             "teacher generator (a complete .onnx file)") from None
        self.input_name = self.session.get_inputs()[0].name
        self.info = KNOWN_TEACHERS.get(path.name, TeacherInfo(None, 16, 256))
        self.path = path
        # What the evaluation cache is keyed on: another teacher under the same name must not
        # be served this one's outputs.
        self.sha256 = sha256_file(path)

    def check_size(self, size: int, option: str) -> None:
        """Refuse a square side this teacher does not accept, naming ``option`` and the fix.

        Raises:
            UsageError: a fixed-size teacher and another size, or a size it cannot take.
        """
        if self.info.fixed_size and self.info.fixed_size != (size, size):
            side = self.info.fixed_size[0]
            raise UsageError(f"{self.path.name} takes only {side}×{side} images; use {option} {side}")
        if self.path.name in KNOWN_TEACHERS and (size < self.info.min_size or size % self.info.multiple):
            # Only the documented teachers: for others the limits are a guess.
            fit = max(self.info.min_size, size // self.info.multiple * self.info.multiple)
            raise UsageError(f"{self.path.name} needs sides of at least {self.info.min_size} px, multiples of "
                             f"{self.info.multiple}; use {option} {fit}")

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
