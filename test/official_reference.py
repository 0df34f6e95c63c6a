"""An independent, deliberately literal transcription of the official decoder and evaluation steps.

Written in the official code's own form (sequence-first tensors, ``nn.MultiheadAttention`` with boolean
"blocked" masks repeated per head, semantic inference on padded-size masks followed by crop and resize of
all channels) so that tests can compare our restructured implementation with it on any seed and size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sine_pe(x: torch.Tensor, num_pos_feats: int) -> torch.Tensor:
    mask = torch.zeros((x.size(0), x.size(2), x.size(3)), dtype=torch.bool)
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * 2 * math.pi
    x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def _mha(state: dict, prefix: str, dim: int, heads: int) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(dim, heads)
    mha.load_state_dict({k: state[prefix + k] for k in ("in_proj_weight", "in_proj_bias", "out_proj.weight",
                                                        "out_proj.bias")})
    return mha.eval()


def _ln(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], state[prefix + "weight"], state[prefix + "bias"])


def _linear(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, state[prefix + "weight"], state[prefix + "bias"])


@torch.no_grad()
def official_decoder(state: dict, multi_scale: list[torch.Tensor], mask_features: torch.Tensor, num_layers: int,
                     heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Final (pred_logits [B, Q, K+1], pred_masks [B, Q, H, W]) as MultiScaleMaskedTransformerDecoder_GMA."""
    p = "predictor."
    dim = state[p + "query_feat.weight"].shape[1]
    src, pos, sizes = [], [], []
    for i, x in enumerate(multi_scale):
        sizes.append(x.shape[-2:])
        pos.append(sine_pe(x, dim // 2).flatten(2).permute(2, 0, 1))
        src.append((x.flatten(2) + state[p + "level_embed.weight"][i][None, :, None]).permute(2, 0, 1))
    bs = src[0].shape[1]
    query_embed = state[p + "query_embed.weight"].unsqueeze(1).repeat(1, bs, 1)
    output = state[p + "query_feat.weight"].unsqueeze(1).repeat(1, bs, 1)

    def heads_fn(output, size):
        decoded = _ln(state, p + "decoder_norm.", output).transpose(0, 1)
        cls = _linear(state, p + "class_embed.", decoded)
        emb = decoded
        for j in range(3):
            emb = _linear(state, f"{p}mask_embed.layers.{j}.", emb)
            emb = F.relu(emb) if j < 2 else emb
        masks = torch.einsum("bqc,bchw->bqhw", emb, mask_features)
        am = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        am = am.sigmoid().flatten(2).unsqueeze(1).repeat(1, heads, 1, 1).flatten(0, 1)
        return cls, masks, (am < 0.5).bool(), (am > 0.5).bool()

    cls, masks, fg, bg = heads_fn(output, sizes[0])
    for i in range(num_layers):
        level = i % 3
        fg[torch.where(fg.sum(-1) == fg.shape[-1])] = False
        bg[torch.where(bg.sum(-1) == bg.shape[-1])] = False
        c = f"{p}transformer_cross_attention_layers.{i}."
        q, k = output + query_embed, src[level] + pos[level]
        t_fg = _mha(state, c + "multihead_attn_foreground.", dim, heads)(q, k, src[level], attn_mask=fg)[0]
        t_bg = _mha(state, c + "multihead_attn_background.", dim, heads)(q, k, src[level], attn_mask=bg)[0]
        output = _ln(state, c + "norm.", output + (t_bg + t_fg))
        s = f"{p}transformer_self_attention_layers.{i}."
        q = output + query_embed
        output = _ln(state, s + "norm.", output + _mha(state, s + "self_attn.", dim, heads)(q, q, output)[0])
        f = f"{p}transformer_ffn_layers.{i}."
        hidden = F.relu(_linear(state, f + "linear1.", output))
        output = _ln(state, f + "norm.", output + _linear(state, f + "linear2.", hidden))
        cls, masks, fg, bg = heads_fn(output, sizes[(i + 1) % 3])
    return cls, masks


@torch.no_grad()
def official_anomaly(mask_cls: torch.Tensor, mask_pred: torch.Tensor, padded: tuple[int, int],
                     image_size: tuple[int, int], out_size: tuple[int, int], num_classes: int):
    """(anomaly, anomaly_no_refine, semseg argmax) of one image as anomaly_inference.py computes them."""
    mask_pred = F.interpolate(mask_pred[None], size=padded, mode="bilinear", align_corners=False)[0]
    mask_cls_f = F.softmax(mask_cls, dim=-1)[..., :-1]
    semseg = torch.einsum("qc,qhw->chw", mask_cls_f, mask_pred.sigmoid())
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > 0.95) & (labels < 11) & (labels > 1)
    semseg = torch.cat((semseg, scores[keep].view(-1, 1, 1) * mask_pred.sigmoid()[keep]), 0)
    semseg = semseg[:, : image_size[0], : image_size[1]]
    semseg = F.interpolate(semseg[None], size=out_size, mode="bilinear", align_corners=False)[0]
    s = semseg.unsqueeze(0)
    anomaly = 1 - torch.max(s[0:19], axis=1)[0]
    no_refine = anomaly.clone()
    k = int(keep.sum())
    if k > 1:
        refine = torch.max(semseg[num_classes:], axis=0)[0]
        refine = (refine >= 0.5).float()
        anomaly = anomaly * (1 - refine)
    return anomaly[0], no_refine[0], semseg[:num_classes].argmax(0), k
