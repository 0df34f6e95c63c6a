"""Optimiser of the official recipe: AdamW with per-parameter groups, poly schedule, full-model clipping.

Groups as the official ``build_optimizer``: base lr and weight decay 0.05, except weight decay 0 for the
parameters of normalisation layers (GroupNorm, LayerNorm, BatchNorm) and of ``nn.Embedding`` modules, and
lr x ``backbone_multiplier`` (0.1) inside the backbone. Frozen parameters (the backbone) are left out.
Learning rate: lr * (1 - iteration / max_iter) ** 0.9, no warm-up. Gradients: one L2-norm clip over all
parameters at 0.01 (after unscaling under AMP).
"""
from __future__ import annotations

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
              nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_multiplier: float = 0.1,
                 norm_weight_decay: float = 0.0, embedding_weight_decay: float = 0.0) -> list[dict]:
    """One group per (lr, weight decay) combination, parameters in module order."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    names: dict[tuple[float, float], list[str]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group_lr = lr * backbone_multiplier if module_name.split(".")[0] == "backbone" else lr
            decay = weight_decay
            if isinstance(module, NORM_TYPES):
                decay = norm_weight_decay
            elif isinstance(module, nn.Embedding):
                decay = embedding_weight_decay
            groups.setdefault((group_lr, decay), []).append(param)
            names.setdefault((group_lr, decay), []).append(f"{module_name}.{param_name}")
    return [{"params": params, "lr": key[0], "weight_decay": key[1], "names": names[key]}
            for key, params in groups.items()]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    backbone_multiplier: float = 0.1) -> torch.optim.AdamW:
    groups = param_groups(model, lr, weight_decay, backbone_multiplier)
    if not groups:
        raise ValueError("the model has no trainable parameter")
    return torch.optim.AdamW(groups, lr=lr)


def poly_factor(iteration: int, max_iter: int, power: float = 0.9) -> float:
    return (1.0 - min(iteration, max_iter) / max_iter) ** power


def build_scheduler(optimizer: torch.optim.Optimizer, max_iter: int, power: float = 0.9
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_factor(it, max_iter, power))


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Full-model L2 clip (official ``CLIP_TYPE: full_model``); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
