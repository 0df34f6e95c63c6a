"""Multi-head attention with ``nn.MultiheadAttention``'s parameter layout, batch-first.

The packed ``in_proj_weight`` holds the q, k, v projections as rows [0:C], [C:2C], [2C:3C], exactly as the
official checkpoint stores them. The product runs in ``scaled_dot_product_attention`` (fused kernels on
GPU, a plain MatMul-Add-Softmax-MatMul in ONNX). Masks are additive floats (0 or a large negative value)
rather than booleans: TensorRT parses them as a plain Add, and a finite value keeps fp16 engines free of
inf arithmetic. The value is far below any attention logit, so blocked keys get exactly zero weight in
fp32, as with the official boolean mask (every row keeps at least one allowed key).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Added to the logits of blocked keys; exp(-30000 + x) underflows to 0 in fp32 and fp16 alike.
BLOCKED = -30000.0


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool "may attend" mask -> float mask to add to the attention logits (0 or ``BLOCKED``)."""
    return (~allowed).to(dtype) * BLOCKED


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query [B, Lq, C], key/value [B, Lk, C]; ``allowed`` [B, Lq, Lk] bool, True where attention may go."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        mask = None if allowed is None else additive_mask(allowed, q.dtype)[:, None]  # same for every head
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).flatten(2)
        return self.out_proj(out)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
