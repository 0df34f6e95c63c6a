"""Mask contrastive loss (paper Sec. 4.3; SPEC section 5): separate inlier and outlier anomaly scores.

With L[c, x] = sum_q softmax(class logits)[q, c] * sigmoid(mask logits)[q, x] over the K known classes,
l(x) = -max_c L[c, x] (in [-1, 0]) is pushed to 0 on inlier pixels and above the margin m on outlier pixels
(label 254, pasted by AnomalyMix):

    loss = 0.5 * ( mean_inliers l^2 + mean_outliers max(0, m - l)^2 )

The paper's margin is 0.75, the official config's 1.0 (our default). Two deliberate differences from the
official code, both fixes: the score map is compared with labels padded like the image (the official code
stretched the padded prediction over the unpadded label), resized bilinearly with align_corners=False as
at inference; and inliers are the pixels with a known class (the official code also counted void pixels).
A term whose pixel set is empty contributes 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from m2a_core.classes import IGNORE_ID, UNKNOWN_ID

OUTLIER_ID = UNKNOWN_ID
DEFAULT_MARGIN = 1.0


def negative_max_class_score(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """pred_logits [B, Q, K+1], pred_masks [B, Q, h, w] -> l = -max_c L[c] [B, h, w]."""
    probs = pred_logits.float().softmax(-1)[..., :-1]
    class_map = torch.einsum("bqc,bqhw->bchw", probs, pred_masks.float().sigmoid())
    return -class_map.amax(1)


@dataclass
class ContrastiveTerms:
    """Sums and pixel counts of both terms, so processes can share one global mean."""

    inlier_sum: torch.Tensor
    inlier_count: torch.Tensor
    outlier_sum: torch.Tensor
    outlier_count: torch.Tensor


def mask_contrastive_terms(pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
                           num_classes: int, margin: float = DEFAULT_MARGIN) -> ContrastiveTerms:
    """labels [B, H, W] (class ids, 254 outlier, 255 ignore), the padded size of the input images."""
    score = negative_max_class_score(pred_logits, pred_masks)
    score = F.interpolate(score[:, None], size=labels.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    inliers = labels < num_classes
    outliers = labels == OUTLIER_ID
    inlier_values = score[inliers]
    outlier_values = score[outliers]
    return ContrastiveTerms(
        inlier_sum=inlier_values.pow(2).sum(),
        inlier_count=inliers.sum().to(score.dtype),
        outlier_sum=(margin - outlier_values).clamp(min=0).pow(2).sum(),
        outlier_count=outliers.sum().to(score.dtype),
    )


def combine_terms(terms: ContrastiveTerms, inlier_count: torch.Tensor, outlier_count: torch.Tensor
                  ) -> torch.Tensor:
    """0.5 * (inlier mean + outlier mean) with the given (possibly all-process) counts; empty terms are 0."""
    loss = terms.inlier_sum * 0.0
    if float(inlier_count) > 0:
        loss = loss + terms.inlier_sum / inlier_count
    if float(outlier_count) > 0:
        loss = loss + terms.outlier_sum / outlier_count
    return 0.5 * loss


def mask_contrastive_loss(pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
                          num_classes: int, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """The loss of one batch in one process."""
    terms = mask_contrastive_terms(pred_logits, pred_masks, labels, num_classes, margin)
    return combine_terms(terms, terms.inlier_count, terms.outlier_count)


__all__ = ["DEFAULT_MARGIN", "IGNORE_ID", "OUTLIER_ID", "ContrastiveTerms", "combine_terms",
           "mask_contrastive_loss", "mask_contrastive_terms", "negative_max_class_score"]
