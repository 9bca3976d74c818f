"""Augmentation applied on the device, per batch, drawn from the trainer's generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_and_flip(images: torch.Tensor, translate: float, hflip: bool, generator: torch.Generator,
                   share: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Random translation (up to `translate` of the size each way, edge pixels replicated) and
    optional horizontal flip of a float NCHW batch, drawn from `generator` (on the CPU).
    `share` = (global batch size, rank, world size): `images` are this rank's share of a
    larger batch; the draws are made for the whole batch, so every rank's generator stays in
    step (it also orders the next epoch)."""
    n = images.shape[0] if share is None else share[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if hflip:
        theta[:, 0, 0] = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    if translate > 0:
        theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * translate  # grid spans [-1, 1]
    if share is not None:
        theta = theta[share[1]::share[2]]
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
