"""Hungarian matching between predicted queries and ground-truth masks (Mask2Former's matcher).

Cost per (query, target) pair: ``class_weight * (-p[target class]) + mask_weight * BCE + dice_weight * dice``,
the mask terms evaluated on ``num_points`` uniformly random points shared by every mask of the image, and
the assignment solved with scipy's ``linear_sum_assignment`` per image (and, under deep supervision, per
prediction). Official weights: 2 / 5 / 5 on 12544 points.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from m2a_core.training.point_sampling import point_sample, random_coords


def pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [Q, P], targets [T, P] -> mean over points of BCE for every pair [Q, T]."""
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1.0 - targets).T) / num_points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [Q, P], targets [T, P] -> 1 - (2 sum(s t) + 1) / (sum s + sum t + 1) for every pair [Q, T]."""
    probs = logits.sigmoid()
    numerator = 2.0 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def matching_cost(pred_logits: torch.Tensor, pred_masks: torch.Tensor, target_labels: torch.Tensor,
                  target_masks: torch.Tensor, coords: torch.Tensor, class_weight: float, mask_weight: float,
                  dice_weight: float) -> torch.Tensor:
    """One image: pred_logits [Q, K+1], pred_masks [Q, h, w], targets [T], [T, H, W], coords [P, 2] -> [Q, T]."""
    probs = pred_logits.float().softmax(-1)
    cost_class = -probs[:, target_labels]
    num_queries, num_targets = pred_masks.shape[0], target_masks.shape[0]
    point_logits = point_sample(pred_masks[:, None].float(), coords[None].expand(num_queries, -1, -1))[:, 0]
    point_targets = point_sample(target_masks[:, None].float(), coords[None].expand(num_targets, -1, -1))[:, 0]
    return (class_weight * cost_class + mask_weight * pairwise_bce(point_logits, point_targets)
            + dice_weight * pairwise_dice(point_logits, point_targets))


class HungarianMatcher:
    def __init__(self, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 num_points: int = 12544) -> None:
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("matcher costs cannot all be 0")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def match_image(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, target: dict
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(query indices, target indices), sorted by query, for one image."""
        labels, masks = target["labels"], target["masks"]
        if labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty
        coords = random_coords(1, self.num_points, pred_masks.device, target.get("generator"))[0]
        cost = matching_cost(pred_logits, pred_masks, labels, masks, coords,
                             self.class_weight, self.mask_weight, self.dice_weight)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

    def __call__(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.match_image(outputs["pred_logits"][b], outputs["pred_masks"][b], t)
                for b, t in enumerate(targets)]
