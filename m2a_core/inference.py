"""The paper's inference on network outputs: class map, anomaly score, refinement, semantic labels.

Follows the official evaluation (SPEC section 2): mask logits are upsampled bilinearly to the padded
input size, passed through a sigmoid, cropped to the unpadded input and resized bilinearly to the
output size; the class map is L[c] = sum_q softmax(class logits)[q, c] * S[q] over the K known classes
(no-object dropped, not renormalised); the anomaly score is A = 1 - max_c L[c]; the refinement mask R
is on where a confident "stuff" query (building ... sky) claims the pixel, R = [max_q p_q S_q >= 0.5],
and A <- A * (1 - R) when more than one query is kept.

Full-resolution per-query masks are large (100 x 1024 x 2048 floats), so they are processed in chunks
of queries and never held all at once; the result equals the one-shot computation up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

QUERY_CHUNK = 16


@dataclass(frozen=True)
class RefinementParams:
    class_ids: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
    score_threshold: float = 0.95
    mask_threshold: float = 0.5
    # The official code applies refinement only when more than this many queries are kept.
    min_kept_queries: int = 1


@dataclass
class AnomalyMaps:
    """Per-image outputs at the requested output size (torch tensors on the model's device)."""

    anomaly: torch.Tensor            # [H, W] float32, refined score (higher = more anomalous)
    anomaly_no_refine: torch.Tensor  # [H, W] float32
    class_map: torch.Tensor          # [K, H, W] float32, L
    semseg: torch.Tensor             # [H, W] int64, argmax_c L
    refine_mask: torch.Tensor        # [H, W] bool, where refinement zeroed the score
    num_refine: int                  # number of queries kept for refinement


def class_probs(pred_logits: torch.Tensor) -> torch.Tensor:
    """softmax over K+1 with the no-object column dropped (not renormalised): [..., Q, K]."""
    return pred_logits.float().softmax(-1)[..., :-1]


def upsample_mask_probs(mask_logits: torch.Tensor, padded_size: tuple[int, int], input_size: tuple[int, int],
                        output_size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] mask logits at 1/4 of the padded input -> [N, H, W] probabilities at ``output_size``.

    Upsample to the padded size, sigmoid, crop the padding away, resize to the output size (bilinear,
    align_corners=False throughout) in the official order.
    """
    probs = F.interpolate(mask_logits[None].float(), size=padded_size, mode="bilinear", align_corners=False)
    probs = probs.sigmoid()[:, :, : input_size[0], : input_size[1]]
    if tuple(input_size) != tuple(output_size):
        probs = F.interpolate(probs, size=output_size, mode="bilinear", align_corners=False)
    return probs[0]


def mask_probs(pred_masks: torch.Tensor, padded_size: tuple[int, int], input_size: tuple[int, int],
               output_size: tuple[int, int]) -> torch.Tensor:
    """Batched form for callers that need every query mask: [B, Q, h, w] -> [B, Q, H, W]."""
    return torch.stack([upsample_mask_probs(m, padded_size, input_size, output_size) for m in pred_masks])


def class_map(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """L = einsum(P [.., Q, K], S [.., Q, H, W]) -> [.., K, H, W]."""
    return torch.einsum("...qc,...qhw->...chw", probs, masks)


def refinement_queries(pred_logits: torch.Tensor, params: RefinementParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries whose best class over all K+1 is a refinement class with probability above the threshold."""
    scores, labels = pred_logits.float().softmax(-1).max(-1)
    ids = torch.tensor(params.class_ids, device=labels.device)
    keep = (labels[..., None] == ids).any(-1) & (scores > params.score_threshold)
    return keep, scores


def anomaly_maps(pred_logits: torch.Tensor, pred_masks: torch.Tensor, padded_size: tuple[int, int],
                 input_size: tuple[int, int], output_size: tuple[int, int],
                 refinement: RefinementParams | None = RefinementParams(),
                 query_chunk: int = QUERY_CHUNK) -> AnomalyMaps:
    """One image: pred_logits [Q, K+1], pred_masks [Q, h, w] -> anomaly, class map, semantic labels."""
    probs = class_probs(pred_logits)
    num_queries, num_classes = probs.shape
    height, width = output_size
    device = pred_masks.device
    total = torch.zeros(num_classes, height, width, device=device)
    if refinement is not None:
        keep, scores = refinement_queries(pred_logits, refinement)
    else:
        keep = torch.zeros(num_queries, dtype=torch.bool, device=device)
        scores = torch.zeros(num_queries, device=device)
    refine_max = torch.full((height, width), float("-inf"), device=device)
    for start in range(0, num_queries, query_chunk):
        chunk = slice(start, start + query_chunk)
        masks = upsample_mask_probs(pred_masks[chunk], padded_size, input_size, output_size)
        total += class_map(probs[chunk], masks)
        kept = keep[chunk]
        if kept.any():
            weighted = scores[chunk][kept].view(-1, 1, 1) * masks[kept]
            refine_max = torch.maximum(refine_max, weighted.amax(0))
    num_refine = int(keep.sum())
    # The official code takes the max over the class channels and the refinement channels together; the
    # latter never exceed the former (p_q S_q is one term of L[c*]), but keep the exact definition.
    anomaly_no_refine = 1.0 - torch.maximum(total.amax(0), refine_max)
    refine_mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    anomaly = anomaly_no_refine
    if refinement is not None and num_refine > refinement.min_kept_queries:
        refine_mask = refine_max >= refinement.mask_threshold
        anomaly = anomaly_no_refine * (~refine_mask).float()
    return AnomalyMaps(anomaly=anomaly, anomaly_no_refine=anomaly_no_refine, class_map=total,
                       semseg=total.argmax(0), refine_mask=refine_mask, num_refine=num_refine)
