"""The ``cross_attention: masked`` switch: Mask2Former's plain masked attention (the paper's ablation baseline)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from m2a_core.backends.onnxruntime_backend import OnnxRuntimeBackend
from m2a_core.checkpoint import load_model, read_weights, save_weights
from m2a_core.config import ModelConfig
from m2a_core.errors import CheckpointError
from m2a_core.export import TENSORRT10_OPS, export_onnx
from m2a_core.modeling import Mask2Anomaly
from m2a_core.modeling.transformer_decoder import GMATransformerDecoder, masked_attention_mask
from m2a_core.predictor import Predictor, PredictorOptions, TorchBackend

from helpers import TINY, make_model, random_image

MASKED = dataclasses.replace(TINY, cross_attention="masked")


def sine_pe(height: int, width: int, num_pos_feats: int) -> torch.Tensor:
    """DETR's normalised sine encoding [hw, C] written out for one unpadded map."""
    y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width)
    y = y / (height + 1e-6) * 2 * torch.pi
    x = x / (width + 1e-6) * 2 * torch.pi
    dim_t = 10000 ** (2 * (torch.arange(num_pos_feats) // 2) / num_pos_feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=-1).flatten(2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=-1).flatten(2)
    return torch.cat((py, px), dim=-1).flatten(0, 1)


@torch.no_grad()
def mask2former_decoder(state: dict, multi_scale: list[torch.Tensor], mask_features: torch.Tensor,
                        num_layers: int, heads: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A literal transcription of Mask2Former's MultiScaleMaskedTransformerDecoder (post-norm, eval) in its own
    form: sequence-first tensors, ``nn.MultiheadAttention`` with a boolean "blocked" mask repeated per head, and
    the fully-blocked-row fix applied just before each cross-attention. Returns the final (class logits, mask
    logits) and counts of the rows that were partly blocked / would have been blocked everywhere."""
    p = "predictor."

    def mha(prefix: str) -> nn.MultiheadAttention:
        module = nn.MultiheadAttention(dim, heads).to(mask_features.dtype)
        module.load_state_dict({k: state[prefix + k] for k in
                                ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")})
        return module.eval()

    def layer_norm(prefix: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], state[prefix + "weight"], state[prefix + "bias"])

    def linear(prefix: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, state[prefix + "weight"], state[prefix + "bias"])

    dim = state[p + "query_feat.weight"].shape[1]
    bs = mask_features.shape[0]
    src, pos, sizes = [], [], []
    for i, x in enumerate(multi_scale):
        sizes.append(x.shape[-2:])
        pos.append(sine_pe(x.shape[2], x.shape[3], dim // 2)[:, None].repeat(1, bs, 1))
        src.append((x.flatten(2) + state[p + "level_embed.weight"][i][None, :, None]).permute(2, 0, 1))
    query_embed = state[p + "query_embed.weight"].unsqueeze(1).repeat(1, bs, 1)
    output = state[p + "query_feat.weight"].unsqueeze(1).repeat(1, bs, 1)

    def prediction_heads(output, size):
        decoded = layer_norm(p + "decoder_norm.", output).transpose(0, 1)
        outputs_class = linear(p + "class_embed.", decoded)
        embedding = decoded
        for j in range(3):
            embedding = linear(f"{p}mask_embed.layers.{j}.", embedding)
            embedding = F.relu(embedding) if j < 2 else embedding
        outputs_mask = torch.einsum("bqc,bchw->bqhw", embedding, mask_features)
        attn_mask = F.interpolate(outputs_mask, size=size, mode="bilinear", align_corners=False)
        attn_mask = attn_mask.sigmoid().flatten(2).unsqueeze(1).repeat(1, heads, 1, 1).flatten(0, 1) < 0.5
        return outputs_class, outputs_mask, attn_mask

    counts = {"partly_blocked": 0, "fully_blocked": 0}
    outputs_class, outputs_mask, attn_mask = prediction_heads(output, sizes[0])
    for i in range(num_layers):
        level = i % 3
        full = attn_mask.sum(-1) == attn_mask.shape[-1]
        counts["fully_blocked"] += int(full.sum())
        counts["partly_blocked"] += int((attn_mask.any(-1) & ~full).sum())
        attn_mask[torch.where(full)] = False
        c = f"{p}transformer_cross_attention_layers.{i}."
        tgt2 = mha(c + "multihead_attn.")(output + query_embed, src[level] + pos[level], src[level],
                                          attn_mask=attn_mask)[0]
        output = layer_norm(c + "norm.", output + tgt2)
        s = f"{p}transformer_self_attention_layers.{i}."
        q = output + query_embed
        output = layer_norm(s + "norm.", output + mha(s + "self_attn.")(q, q, output)[0])
        f = f"{p}transformer_ffn_layers.{i}."
        output = layer_norm(f + "norm.", output + linear(f + "linear2.", F.relu(linear(f + "linear1.", output))))
        outputs_class, outputs_mask, attn_mask = prediction_heads(output, sizes[(i + 1) % 3])
    return outputs_class, outputs_mask, counts


def test_masked_attention_mask_follows_mask2former_threshold_and_unblocks_empty_rows():
    logits = torch.tensor([[
        [[2.0, -1.0], [0.0, -0.5]],    # sigmoid(0) = 0.5 is NOT blocked (Mask2Former blocks < 0.5)
        [[-1.0, -2.0], [-3.0, -4.0]],  # empty mask: blocked everywhere, so unblocked
        [[1.0, 2.0], [3.0, 4.0]],      # full mask: attends everywhere
    ]])
    allowed = masked_attention_mask(logits, (2, 2))
    assert allowed.dtype == torch.bool and allowed.shape == (1, 3, 4)
    assert allowed[0].tolist() == [[True, False, True, False], [True] * 4, [True] * 4]
    # Resizing happens before thresholding: a 1x2 map bilinearly upsampled to 1x4 gives -1, -0.5, 0.5, 1.
    assert masked_attention_mask(torch.tensor([[[[-1.0, 1.0]]]]), (1, 4))[0, 0].tolist() == [False, False, True,
                                                                                              True]


def test_masked_decoder_equals_a_literal_mask2former_transcription():
    torch.manual_seed(3)
    dim, heads, layers, queries, classes = 32, 4, 5, 12, 7
    decoder = GMATransformerDecoder(dim, heads, 48, layers, queries, classes, dim, cross_attention="masked")
    decoder = decoder.double().eval()  # float64: no pixel sits on the 0.5 threshold by rounding alone
    with torch.no_grad():  # larger weights than at initialisation: queries that differ clearly
        for parameter in decoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    multi_scale = [torch.randn(2, dim, h, w, dtype=torch.float64) for h, w in ((2, 3), (4, 6), (8, 12))]
    mask_features = torch.randn(2, dim, 16, 24, dtype=torch.float64)
    # A constant channel: queries whose embedding is strongly negative there predict an empty mask (blocked
    # everywhere, so the fix applies), the others a partial or full one.
    mask_features[:, 0] = 4.0
    with torch.no_grad():
        all_classes, all_masks = decoder(multi_scale, mask_features)
    state = {"predictor." + k: v for k, v in decoder.state_dict().items()}
    expected_classes, expected_masks, counts = mask2former_decoder(state, multi_scale, mask_features, layers, heads)
    assert len(all_classes) == len(all_masks) == layers + 1
    torch.testing.assert_close(all_classes[-1], expected_classes, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(all_masks[-1], expected_masks, atol=1e-9, rtol=1e-9)
    # The comparison exercised both the mask and the fully-blocked-row fix (counts are per head).
    assert counts["partly_blocked"] > 0 and counts["fully_blocked"] > 0, counts


def test_masked_model_equals_gma_model_with_a_silent_background_branch():
    gma = make_model(TINY, 2)
    masked = Mask2Anomaly(MASKED).eval()
    state = {}
    for key, value in gma.state_dict().items():
        if "multihead_attn_background" in key:
            continue
        state[key.replace("multihead_attn_foreground", "multihead_attn")] = value
    masked.load_state_dict(state, strict=True)
    with torch.no_grad():
        for layer in gma.predictor.transformer_cross_attention_layers:
            layer.multihead_attn_background.out_proj.weight.zero_()
            layer.multihead_attn_background.out_proj.bias.zero_()
        x = torch.randn(1, 3, 64, 96)
        expected, got = gma(x, aux=True), masked(x, aux=True)
    torch.testing.assert_close(got["pred_masks"], expected["pred_masks"])
    torch.testing.assert_close(got["pred_logits"], expected["pred_logits"])
    for got_aux, expected_aux in zip(got["aux_outputs"], expected["aux_outputs"], strict=True):
        torch.testing.assert_close(got_aux["pred_masks"], expected_aux["pred_masks"])


def test_state_dict_layouts_differ_only_in_the_cross_attention():
    gma, masked = Mask2Anomaly(TINY).state_dict(), Mask2Anomaly(MASKED).state_dict()
    prefix = "predictor.transformer_cross_attention_layers."
    shared = {k for k in gma if not k.startswith(prefix)}
    assert shared == {k for k in masked if not k.startswith(prefix)}
    assert all(gma[k].shape == masked[k].shape for k in shared)
    attention = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    # Mask2Former's names (CrossAttentionLayer.multihead_attn / .norm), no background branch.
    assert {k for k in masked if k.startswith(prefix)} == {
        f"{prefix}{i}.{name}" for i in range(TINY.decoder_layers)
        for name in [f"multihead_attn.{a}" for a in attention] + ["norm.weight", "norm.bias"]}
    assert {k for k in gma if k.startswith(prefix)} == {
        f"{prefix}{i}.{name}" for i in range(TINY.decoder_layers)
        for name in [f"multihead_attn_{branch}.{a}" for branch in ("foreground", "background") for a in attention]
        + ["norm.weight", "norm.bias"]}
    # One attention fewer per layer: in_proj 3C x C + 3C, out_proj C x C + C.
    c = TINY.hidden_dim
    assert sum(v.numel() for v in gma.values()) - sum(v.numel() for v in masked.values()) == \
        TINY.decoder_layers * (4 * c * c + 4 * c)


def test_masked_config_round_trips_through_a_weights_file(tmp_path):
    model = make_model(MASKED, 4)
    save_weights(model, tmp_path / "masked.safetensors")
    config, _ = read_weights(tmp_path / "masked.safetensors")
    assert config.cross_attention == "masked" and config == MASKED
    loaded = load_model(tmp_path / "masked.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["pred_masks"], model(x)["pred_masks"])


def test_weights_files_without_the_field_load_as_global_attention(tmp_path):
    model = make_model(TINY, 5)
    legacy = json.loads(TINY.to_json())
    del legacy["cross_attention"]  # what files written before the switch existed carry
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"),
              metadata={"format": "m2a-weights/1", "m2a_config": json.dumps(legacy)})
    loaded = load_model(tmp_path / "old.safetensors")
    assert loaded.config.cross_attention == "global" and loaded.config == TINY
    # A file that claims masked attention but holds GMA tensors names the mismatching entries.
    legacy["cross_attention"] = "masked"
    save_file(tensors, str(tmp_path / "wrong.safetensors"),
              metadata={"format": "m2a-weights/1", "m2a_config": json.dumps(legacy)})
    with pytest.raises(CheckpointError, match=r"missing: .*multihead_attn\.in_proj_weight.*unexpected: .*"
                                              r"multihead_attn_background"):
        load_model(tmp_path / "wrong.safetensors")


def test_unknown_cross_attention_is_a_clear_error():
    with pytest.raises(ValueError, match=r"cross_attention must be one of \('global', 'masked'\), got 'plain'"):
        ModelConfig(cross_attention="plain")
    raw = json.loads(TINY.to_json())
    raw["cross_attention"] = "deformable"
    with pytest.raises(CheckpointError, match="cross_attention must be one of"):
        ModelConfig.from_json(json.dumps(raw))


def test_masked_model_exports_to_onnx_with_tensorrt_operators_and_matches_torch(tmp_path):
    model = make_model(MASKED, 1, force_class=8)
    path = export_onnx(model, tmp_path / "masked.onnx", 64, 96)
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    assert {node.op_type for node in graph.graph.node} <= TENSORRT10_OPS
    options = PredictorOptions(short_side=None)
    image = random_image(0, 64, 96)
    expected = Predictor(TorchBackend(model), options)(image)
    backend = OnnxRuntimeBackend(path)
    assert backend.config == MASKED
    got = Predictor(backend, options)(image)
    np.testing.assert_allclose(got.pred_logits, expected.pred_logits, atol=1e-4)
    np.testing.assert_allclose(got.pred_masks, expected.pred_masks, atol=1e-4)
    np.testing.assert_allclose(got.anomaly, expected.anomaly, atol=1e-4)
