"""Mask2Former transformer decoder with Mask2Anomaly's global masked attention (GMA) or plain masked attention.

Every layer cross-attends to one level of the pixel decoder (1/32, 1/16, 1/8 in turn), restricted by the
previous prediction's masks. GMA (``cross_attention="global"``, Mask2Anomaly) has two attention branches
with their own weights: the foreground branch may only look where the mask is on (sigmoid >= 0.5), the
background branch only where it is off (sigmoid <= 0.5); their outputs are summed before add & norm.
Plain masked attention (``cross_attention="masked"``, Mask2Former, the baseline of the paper's ablation)
has the foreground branch only, under Mask2Former's parameter names (``multihead_attn``, ``norm``).
A query whose mask is empty (or full) would be blocked everywhere in a branch; that branch is then
unblocked for that query, as in both official codes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2a_core.modeling.attention import MultiHeadAttention
from m2a_core.modeling.position_encoding import sine_position_encoding

NUM_LEVELS = 3


class GlobalMaskedCrossAttention(nn.Module):
    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn_foreground = MultiHeadAttention(d_model, nhead)
        self.multihead_attn_background = MultiHeadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        query, key = tgt + query_pos, memory + pos
        fg = self.multihead_attn_foreground(query, key, memory, foreground)
        bg = self.multihead_attn_background(query, key, memory, background)
        return self.norm(tgt + fg + bg)


class MaskedCrossAttention(nn.Module):
    """Mask2Former's masked attention: one attention limited to the foreground, then add & norm."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = MultiHeadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                foreground: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory, foreground))


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt))


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _mask_probabilities(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """sigmoid of the mask logits resized to ``size``, flattened to [B, Q, h*w]; no gradient flows into masks."""
    probs = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid().flatten(2)
    return probs.detach()


def _unblock_empty_rows(allowed: torch.Tensor) -> torch.Tensor:
    # A row blocked everywhere is unblocked (official behaviour; also avoids an all -inf softmax).
    return allowed | ~allowed.any(-1, keepdim=True)


def masked_attention_mask(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask2Former's 'may attend' mask [B, Q, h*w]: where sigmoid >= 0.5 (it blocks sigmoid < 0.5)."""
    return _unblock_empty_rows(_mask_probabilities(mask_logits, size) >= 0.5)


def gma_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground / background 'may attend' masks [B, Q, h*w] from mask logits resized to ``size``."""
    probs = _mask_probabilities(mask_logits, size)
    return _unblock_empty_rows(probs >= 0.5), _unblock_empty_rows(probs <= 0.5)


class GMATransformerDecoder(nn.Module):
    """The decoder; ``cross_attention`` chooses GMA ("global", the default) or plain masked attention ("masked")."""

    def __init__(self, hidden_dim: int, num_heads: int, ffn_dim: int, num_layers: int, num_queries: int,
                 num_classes: int, mask_dim: int, cross_attention: str = "global") -> None:
        super().__init__()
        layer_types = {"global": GlobalMaskedCrossAttention, "masked": MaskedCrossAttention}
        if cross_attention not in layer_types:
            raise ValueError(f"cross_attention must be one of {tuple(layer_types)}, got {cross_attention!r}")
        self.cross_attention = cross_attention
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads) for _ in range(num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            layer_types[cross_attention](hidden_dim, num_heads) for _ in range(num_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, ffn_dim) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(NUM_LEVELS, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def prediction_heads(self, output: torch.Tensor, mask_features: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.decoder_norm(output)
        class_logits = self.class_embed(decoded)
        # A batched matmul rather than einsum: the same product, and every ONNX consumer fuses it.
        batch, channels, height, width = mask_features.shape
        mask_logits = torch.bmm(self.mask_embed(decoded), mask_features.view(batch, channels, height * width))
        mask_logits = mask_logits.view(batch, -1, height, width)
        return class_logits, mask_logits

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return the class logits [B, Q, K+1] and mask logits [B, Q, H/4, W/4] of all L+1 predictions."""
        batch = mask_features.shape[0]
        sizes, srcs, pos = [], [], []
        for i, x in enumerate(multi_scale):
            sizes.append((int(x.shape[2]), int(x.shape[3])))
            pe = sine_position_encoding(batch, x.shape[2], x.shape[3], self.hidden_dim // 2, x.device)
            pos.append(pe.to(x.dtype).flatten(2).transpose(1, 2))
            srcs.append((x.flatten(2) + self.level_embed.weight[i][None, :, None]).transpose(1, 2))

        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

        class_logits, mask_logits = self.prediction_heads(output, mask_features)
        all_classes, all_masks = [class_logits], [mask_logits]
        for i in range(self.num_layers):
            level = i % NUM_LEVELS
            if self.cross_attention == "global":
                allowed = gma_masks(mask_logits, sizes[level])
            else:
                allowed = (masked_attention_mask(mask_logits, sizes[level]),)
            output = self.transformer_cross_attention_layers[i](output, srcs[level], pos[level], query_pos, *allowed)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            class_logits, mask_logits = self.prediction_heads(output, mask_features)
            all_classes.append(class_logits)
            all_masks.append(mask_logits)
        return all_classes, all_masks
