"""Set criterion of Mask2Former / Mask2Anomaly with deep supervision (SPEC section 5).

Every prediction (the final one and each auxiliary one) is matched to the targets separately and gets
cross-entropy over K+1 classes (no-object weight 0.1), point-sampled mask BCE and dice on the matched
pairs (importance sampling: 3x oversampling, 75 % most uncertain points) and, in stage 2, the mask
contrastive loss. Loss names follow the official code: ``loss_ce``, ``loss_mask``, ``loss_dice``,
``loss_ood`` for the final prediction and ``<name>_<i>`` for auxiliary prediction i; values are weighted.

Distributed runs: every normaliser (number of target masks, the class-weight sum of the cross-entropy,
the pixel counts of the contrastive loss) is all-reduced and averaged over processes, so after DDP's
gradient averaging the gradient equals that of one process on the whole global batch. The official code
does this for the mask count only; for the other two it averaged per-GPU means, which made the loss depend
on how the batch was split. Random points are drawn from a per-image generator (``target["generator"]``,
optional) so they do not depend on the split either.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from m2a_core.training.matcher import HungarianMatcher
from m2a_core.training.outlier_loss import DEFAULT_MARGIN, combine_terms, mask_contrastive_terms
from m2a_core.training.point_sampling import point_sample, uncertain_point_coords


def distributed_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a (detached) scalar over all processes; the value itself in a single process."""
    value = value.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def sigmoid_bce_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    probs = point_logits.sigmoid()
    numerator = 2 * (probs * point_labels).sum(-1)
    denominator = probs.sum(-1) + point_labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class SetCriterion(nn.Module):
    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None, class_weight: float = 2.0,
                 mask_weight: float = 5.0, dice_weight: float = 5.0, no_object_weight: float = 0.1,
                 num_points: int = 12544, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75,
                 outlier_weight: float = 0.0, outlier_margin: float = DEFAULT_MARGIN,
                 deep_supervision: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight,
                        "loss_ood": outlier_weight}
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.outlier_margin = outlier_margin
        self.deep_supervision = deep_supervision
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    # -- individual losses -------------------------------------------------------------------------
    def loss_labels(self, pred_logits: torch.Tensor, targets: list[dict],
                    indices: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        logits = pred_logits.float()
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src.to(logits.device)] = targets[b]["labels"][tgt.to(logits.device)]
        weights = self.class_weights.to(logits.device)[target_classes]
        nll = F.cross_entropy(logits.transpose(1, 2), target_classes, reduction="none")
        # Weighted mean as F.cross_entropy(weight=...) computes it, with the weight sum of all processes.
        return (weights * nll).sum() / distributed_mean(weights.sum()).clamp(min=1e-12)

    def loss_masks(self, pred_masks: torch.Tensor, targets: list[dict],
                   indices: list[tuple[torch.Tensor, torch.Tensor]], num_masks: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        point_logits, point_labels = [], []
        for b, (src, tgt) in enumerate(indices):
            if src.numel() == 0:
                continue
            src_masks = pred_masks[b, src.to(pred_masks.device)][:, None].float()
            tgt_masks = targets[b]["masks"][tgt.to(pred_masks.device)][:, None].to(src_masks.dtype)
            with torch.no_grad():
                coords = uncertain_point_coords(src_masks, self.num_points, self.oversample_ratio,
                                                self.importance_sample_ratio, targets[b].get("generator"))
                point_labels.append(point_sample(tgt_masks, coords)[:, 0])
            point_logits.append(point_sample(src_masks, coords)[:, 0])
        if not point_logits:
            zero = pred_masks.sum() * 0.0
            return zero, zero
        logits, labels = torch.cat(point_logits), torch.cat(point_labels)
        return sigmoid_bce_loss(logits, labels, num_masks), dice_loss(logits, labels, num_masks)

    def loss_outlier(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor
                     ) -> torch.Tensor:
        terms = mask_contrastive_terms(pred_logits, pred_masks, labels, self.num_classes, self.outlier_margin)
        return combine_terms(terms, distributed_mean(terms.inlier_count), distributed_mean(terms.outlier_count))

    # -- all losses of one prediction and of the whole output ----------------------------------------
    def prediction_losses(self, prediction: dict, targets: list[dict], num_masks: float,
                          outlier_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        indices = self.matcher(prediction, targets)
        loss_mask, loss_dice = self.loss_masks(prediction["pred_masks"], targets, indices, num_masks)
        losses = {"loss_ce": self.loss_labels(prediction["pred_logits"], targets, indices),
                  "loss_mask": loss_mask, "loss_dice": loss_dice}
        if outlier_labels is not None and self.weights["loss_ood"] > 0:
            losses["loss_ood"] = self.loss_outlier(prediction["pred_logits"], prediction["pred_masks"],
                                                   outlier_labels)
        return {k: v * self.weights[k] for k, v in losses.items()}

    def forward(self, outputs: dict, targets: list[dict], outlier_labels: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """outputs: the model's dict; targets[b]: ``labels`` [T], ``masks`` [T, Hp, Wp] (padded input size),
        optional ``generator``; outlier_labels [B, Hp, Wp] for the contrastive loss (stage 2)."""
        device = outputs["pred_logits"].device
        local_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        num_masks = float(distributed_mean(local_masks).clamp(min=1))
        losses = self.prediction_losses(outputs, targets, num_masks, outlier_labels)
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self.prediction_losses(aux, targets, num_masks, outlier_labels)
                losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses
