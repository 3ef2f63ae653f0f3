"""Distillation losses: L1, SSIM and Sobel-edge L1, on (N, 3, H, W) images in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004; 11×11 Gaussian, sigma 1.5) over all channels.

    Args:
        a, b: (N, C, H, W) images with values spanning ``data_range``.

    Returns:
        scalar tensor, 1.0 for identical images.
    """
    c = a.shape[1]
    win = _gaussian_window().to(a.device, a.dtype).expand(c, 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean()


def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel responses per channel: (N, C, H, W) → (N, 2C, H-2, W-2)."""
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device, dtype=x.dtype)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    c = x.shape[1]
    return F.conv2d(x, k.repeat(c, 1, 1, 1), groups=c)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB between two images of the same shape."""
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(torch.log10(torch.tensor(data_range**2 / mse)))


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + 0.5·(1 − SSIM) + 0.5·Sobel-L1, with the parts for logging."""
    l1 = F.l1_loss(student, teacher)
    s = 1.0 - ssim(student, teacher)
    edge = F.l1_loss(sobel_edges(student), sobel_edges(teacher))
    total = l1 + 0.5 * s + 0.5 * edge
    return total, {"l1": float(l1.detach()), "ssim": 1.0 - float(s.detach()), "edge": float(edge.detach())}
