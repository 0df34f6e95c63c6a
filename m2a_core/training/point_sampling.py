"""Point sampling for mask losses (PointRend, as Mask2Former uses it).

Coordinates are (x, y) in [0, 1] over the whole map; sampling is bilinear with align_corners=False, so the
same coordinates address the same scene point in a 1/4-resolution prediction and a full-resolution target.
Randomness comes from an optional ``torch.Generator``: the criterion passes one generator per image, so a
sample's points do not depend on which other images share its batch or its process (see ``criterion``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """maps [N, C, H, W], coords [N, P, 2] (x, y in [0, 1]) -> values [N, C, P]."""
    grid = (2.0 * coords - 1.0).unsqueeze(2)
    return F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", align_corners=False).squeeze(3)


def random_coords(count: int, num_points: int, device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform coordinates [count, num_points, 2]."""
    return torch.rand(count, num_points, 2, device=device, generator=generator)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Most uncertain = logit closest to 0: -|logit|."""
    return -logits.abs()


def uncertain_point_coords(mask_logits: torch.Tensor, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance sampling over mask_logits [N, 1, H, W] -> coords [N, num_points, 2].

    Draw ``oversample_ratio * num_points`` uniform candidates, keep the ``importance_sample_ratio``
    fraction of ``num_points`` with the highest uncertainty, fill the rest with fresh uniform points.
    """
    count = mask_logits.shape[0]
    device = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    candidates = random_coords(count, num_sampled, device, generator)
    scores = uncertainty(point_sample(mask_logits, candidates))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = torch.topk(scores, k=num_uncertain, dim=1).indices
    coords = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, random_coords(count, num_random, device, generator)], dim=1)
    return coords
