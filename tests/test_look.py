"""The look figures (animecli.training.look) on tiny generated images: each one's fixed points."""

from __future__ import annotations

import pytest
import torch

from animecli.training.look import LookTally, affine_colour_map, gradient_magnitude


def _images(n: int = 2, side: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(n, 3, side, side, generator=g) * 1.6 - 0.8
    teacher = torch.tanh(torch.randn(n, 3, side, side, generator=g))  # unrelated to the photo
    return photo, teacher


def test_captured_is_one_for_the_teacher_and_zero_for_the_photo() -> None:
    photo, teacher = _images()
    same, none = LookTally(), LookTally()
    same.add(photo, teacher.clone(), teacher)
    none.add(photo, photo.clone(), teacher)
    assert same.figures().captured == pytest.approx(1.0)
    assert none.figures().captured == pytest.approx(0.0, abs=1e-9)
    # Halfway (in pixels) between photo and teacher: MSE a quarter of the photo's, captured 0.75.
    half = LookTally()
    half.add(photo, (photo + teacher) / 2, teacher)
    assert half.figures().captured == pytest.approx(0.75, abs=1e-5)


def test_sums_run_over_the_set_not_means_of_ratios() -> None:
    photo, teacher = _images(n=2)
    student = photo.clone()
    student[0] = teacher[0]  # first image perfect, second unchanged
    tally = LookTally()
    per_image = [tally.add(photo[i], student[i], teacher[i]) for i in range(2)]
    assert [p.captured for p in per_image] == [pytest.approx(1.0), pytest.approx(0.0, abs=1e-9)]
    mse = [float(((photo[i] - teacher[i]) ** 2).mean()) for i in range(2)]
    assert tally.figures().captured == pytest.approx(mse[0] / sum(mse), rel=1e-5)
    assert tally.figures().count == 2
    batch = LookTally()
    batch.add(photo, student, teacher)  # a batch adds up to the same as one by one
    assert batch.figures().captured == pytest.approx(tally.figures().captured, rel=1e-6)


def test_colour_filter_is_one_for_an_affine_teacher_and_below_one_otherwise() -> None:
    photo, other = _images()
    a = torch.tensor([[0.5, 0.2, -0.1], [0.1, 0.6, 0.0], [-0.2, 0.1, 0.4]])
    b = torch.tensor([0.1, -0.2, 0.05])
    teacher = torch.einsum("ij,njhw->nihw", a, photo) + b.view(1, 3, 1, 1)  # within [-1, 1]
    assert teacher.abs().max() < 1
    tally = LookTally()
    tally.add(photo, photo, teacher)
    assert tally.figures().colour_filter == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(affine_colour_map(photo[0], teacher[0]), teacher[0], atol=1e-5)
    unrelated = LookTally()
    unrelated.add(photo, photo, other)
    colour = unrelated.figures().colour_filter
    assert colour is not None and 0.0 <= colour < 0.5  # noise is not a colour grade of the photo


def test_edge_ratio() -> None:
    photo, teacher = _images()
    same = LookTally()
    same.add(photo, teacher.clone(), teacher)
    assert same.figures().edge_ratio == pytest.approx(1.0)
    doubled = LookTally()
    doubled.add(photo, teacher * 2 + 0.3, teacher)  # gradients twice the teacher's (an offset has none)
    assert doubled.figures().edge_ratio == pytest.approx(2.0, rel=1e-5)
    flat = torch.zeros(3, 8, 8)
    assert gradient_magnitude(flat) == 0.0
    ramp = torch.arange(8.0).view(1, 1, 8).expand(3, 8, 8) * 0.1  # Sobel of a 0.1 ramp: 8 × 0.1
    assert gradient_magnitude(ramp) == pytest.approx(0.8, rel=1e-5)


def test_undefined_figures_and_bad_shapes() -> None:
    photo, _ = _images(n=1)
    tally = LookTally()
    tally.add(photo, photo, photo)  # the teacher changes nothing: captured is 0/0
    look = tally.figures()
    assert look.captured is None and look.colour_filter is None and look.edge_ratio == pytest.approx(1.0)
    assert LookTally().figures().edge_ratio is None
    with pytest.raises(ValueError, match="one shape"):
        tally.add(photo, photo[..., :8], photo)
