"""How much of a teacher's look a student reproduces: captured, what a colour filter reaches, edge energy.

PSNR against the teacher flatters a student that changes little: the unchanged photo already
scores about 25 dB against an AnimeGAN teacher. These figures are relative to doing nothing:

* ``captured`` = 1 − ΣMSE(student, teacher) / ΣMSE(photo, teacher) over the set: 1 is the
  teacher's output, 0 is no better than the photo itself, below 0 is worse than the photo.
* ``colour_filter``: the same figure for the best affine colour map photo → teacher, fitted per
  image by least squares (teacher ≈ A·photo + b, A 3×3, b 3). A student near this figure does no
  more than a colour grade; the look (flat areas, line work) is what lies above it.
* ``edge_ratio`` = mean |∇student| / mean |∇teacher| (Sobel magnitude): below 1 is softer than
  the teacher, above 1 is busier.

Sums run over images (each image's MSE is its mean over pixels and channels), so the ratios are
of set totals, not means of per-image ratios: a photo the teacher barely changes cannot swing them.
Torch only, nothing of ours but the Sobel kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from animecli.training.losses import sobel_edges


@dataclass(frozen=True)
class Look:
    """The three figures of a set (``None`` where undefined: the photos equal the teacher's outputs,
    or the teacher's outputs are flat)."""

    captured: float | None
    colour_filter: float | None
    edge_ratio: float | None
    count: int

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready: the three figures (``None``, JSON null, where undefined)."""
        return {"captured": self.captured, "colour_filter": self.colour_filter, "edge_ratio": self.edge_ratio}


def affine_colour_map(photo: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The least-squares affine colour map photo → teacher of one image, applied to the photo.

    Args:
        photo, teacher: (3, H, W) float images in [-1, 1].

    Returns:
        (3, H, W) float32, A·photo + b per pixel with the A (3×3) and b (3) that minimise the squared
        error to ``teacher``, clamped to [-1, 1] (the teacher's range: clamping only brings it closer).
    """
    n = photo[0].numel()
    # The 4×4 normal equations, not lstsq on the n×4 design (0.5 s a 512² image); in float64,
    # where float32 sums over 262 144 pixels lose the small colour terms. lstsq on the 4×4 system
    # still answers for a rank-deficient one (a flat or grey photo).
    design = torch.cat([photo.reshape(3, n).T.double(), torch.ones(n, 1, dtype=torch.float64)], 1)  # (n, 4)
    target = teacher.reshape(3, n).T.double()  # (n, 3)
    coef: torch.Tensor = torch.linalg.lstsq(design.T @ design, design.T @ target).solution  # (4, 3): Aᵀ over b
    return (design @ coef).T.reshape(photo.shape).float().clamp(-1.0, 1.0)


def gradient_magnitude(image: torch.Tensor) -> float:
    """Mean Sobel gradient magnitude of one (3, H, W) float image in [-1, 1] (H, W ≥ 3), over pixels and channels."""
    e = sobel_edges(image.float().unsqueeze(0))  # (1, 6, H-2, W-2): x, y per channel
    return float(torch.hypot(e[:, 0::2], e[:, 1::2]).mean())


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.mean((a.float() - b.float()) ** 2))


@dataclass
class LookTally:
    """Running sums over a set of images; :meth:`add` each image, read :meth:`figures` at the end.

    Every sum is the total over the images added of that image's figure: MSE (mean over pixels
    and channels, in the [-1, 1] range) and mean gradient magnitude.
    """

    count: int = 0
    mse_student: float = 0.0  # Σ MSE(student, teacher)
    mse_photo: float = 0.0  # Σ MSE(photo, teacher)
    mse_colour: float = 0.0  # Σ MSE(affine colour map of the photo, teacher)
    edge_student: float = 0.0  # Σ mean |∇student|
    edge_teacher: float = 0.0  # Σ mean |∇teacher|

    def add(self, photo: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor) -> Look:
        """Add one image (or a batch) and return that image's (that batch's) own figures.

        Args:
            photo, student, teacher: (3, H, W) or (N, 3, H, W) float images in [-1, 1], all one
                shape (H, W ≥ 3), student and teacher outputs for that photo.
        """
        if not (photo.shape == student.shape == teacher.shape):
            raise ValueError(f"photo {tuple(photo.shape)}, student {tuple(student.shape)} and teacher "
                             f"{tuple(teacher.shape)} must have one shape")
        if photo.dim() == 3:
            photo, student, teacher = photo.unsqueeze(0), student.unsqueeze(0), teacher.unsqueeze(0)
        own = LookTally()
        for x, s, t in zip(photo, student, teacher, strict=True):
            own.count += 1
            own.mse_student += _mse(s, t)
            own.mse_photo += _mse(x, t)
            own.mse_colour += _mse(affine_colour_map(x, t), t)
            own.edge_student += gradient_magnitude(s)
            own.edge_teacher += gradient_magnitude(t)
        self.count += own.count
        self.mse_student += own.mse_student
        self.mse_photo += own.mse_photo
        self.mse_colour += own.mse_colour
        self.edge_student += own.edge_student
        self.edge_teacher += own.edge_teacher
        return own.figures()

    def figures(self) -> Look:
        """captured, colour_filter and edge_ratio of everything added so far."""
        return Look(
            captured=_ratio_from_one(self.mse_student, self.mse_photo),
            colour_filter=_ratio_from_one(self.mse_colour, self.mse_photo),
            edge_ratio=self.edge_student / self.edge_teacher if self.edge_teacher > 0 else None,
            count=self.count,
        )


def _ratio_from_one(num: float, den: float) -> float | None:
    """1 − num/den, or ``None`` when den is 0 (the photos already are the teacher's outputs)."""
    if den <= 0 or not math.isfinite(den):
        return None
    return 1.0 - num / den


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A figure for a table or a line: ``value`` in ``spec``, or ``n/a`` when undefined."""
    return "n/a" if value is None else format(value, spec)
