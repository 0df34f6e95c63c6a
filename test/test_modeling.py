"""Unit tests of the network's parts against direct computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from m2a_core.config import ModelConfig
from m2a_core.modeling import Mask2Anomaly
from m2a_core.modeling.attention import MultiHeadAttention
from m2a_core.modeling.backbone import FrozenBatchNorm2d, ResNet
from m2a_core.modeling.ms_deform_attn import ms_deform_attn_sample
from m2a_core.modeling.transformer_decoder import gma_masks


def bilinear_zero_pad(feature: np.ndarray, x: float, y: float) -> np.ndarray:
    """Sample [D, H, W] at normalised (x, y) in [0, 1] (pixel centres at (i + 0.5) / W), zeros outside."""
    _, height, width = feature.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = int(np.floor(px)), int(np.floor(py))
    out = np.zeros(feature.shape[0])
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                out += wy * wx * feature[:, yy, xx]
    return out


def test_deformable_sampling_equals_direct_bilinear_sum():
    torch.manual_seed(0)
    shapes = [(3, 5), (6, 4)]
    n, heads, dim, queries, points = 2, 2, 3, 4, 3
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, dim, dtype=torch.float64)
    # Locations spread past the borders to exercise zero padding.
    locations = torch.rand(n, queries, heads, len(shapes), points, 2, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(n, queries, heads, len(shapes), points, dtype=torch.float64)
    out = ms_deform_attn_sample(value, shapes, locations, weights)
    assert out.shape == (n, queries, heads * dim)

    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for b in range(n):
        for q in range(queries):
            for m in range(heads):
                expected = np.zeros(dim)
                for level, (h, w) in enumerate(shapes):
                    feature = value[b, starts[level]:starts[level + 1], m].numpy().T.reshape(dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, level, p].tolist()
                        expected += weights[b, q, m, level, p].item() * bilinear_zero_pad(feature, x, y)
                np.testing.assert_allclose(out[b, q, m * dim:(m + 1) * dim].numpy(), expected, atol=1e-10)


def test_gma_masks_are_complementary_and_unblock_empty_rows():
    logits = torch.tensor([[
        [[2.0, -1.0], [-3.0, 0.5]],   # mixed: fg on two pixels, bg on the other two
        [[-1.0, -2.0], [-3.0, -4.0]],  # empty mask: foreground would be blocked everywhere
        [[1.0, 2.0], [3.0, 4.0]],      # full mask: background would be blocked everywhere
    ]])
    foreground, background = gma_masks(logits, (2, 2))
    assert foreground.shape == (1, 3, 4)
    assert foreground[0, 0].tolist() == [True, False, False, True]
    assert background[0, 0].tolist() == [False, True, True, False]
    assert foreground[0, 1].all() and background[0, 1].tolist() == [True] * 4
    assert background[0, 2].all() and foreground[0, 2].tolist() == [True] * 4


def test_masked_attention_ignores_blocked_keys_and_matches_torch_mha():
    torch.manual_seed(0)
    dim, heads, keys = 16, 4, 7
    ours = MultiHeadAttention(dim, heads)
    reference = nn.MultiheadAttention(dim, heads)
    reference.load_state_dict(ours.state_dict())
    query, key, value = torch.randn(1, 3, dim), torch.randn(1, keys, dim), torch.randn(1, keys, dim)
    allowed = torch.rand(1, 3, keys) > 0.4
    allowed[:, :, 0] = True
    blocked = (~allowed).repeat_interleave(heads, dim=0)  # torch MHA: True = blocked, per head
    expected = reference(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), attn_mask=blocked)[0]
    got = ours(query, key, value, allowed)
    torch.testing.assert_close(got, expected.transpose(0, 1), atol=1e-5, rtol=1e-5)
    # Changing blocked keys' values must not change the output.
    value2 = value.clone()
    value2[:, ~allowed[0].any(0)] += 100.0
    torch.testing.assert_close(ours(query, key, value2, allowed), got)


def test_frozen_batchnorm_equals_eval_batchnorm_and_never_trains():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    frozen = FrozenBatchNorm2d(5)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(frozen, name).copy_(getattr(bn, name))
    x = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(frozen(x), bn(x))
    frozen.train()
    torch.testing.assert_close(frozen(x * 3 + 1), bn(x * 3 + 1))
    assert list(frozen.parameters()) == []


def test_backbone_strides_and_channels():
    for depth, channels in ((18, (64, 128, 256, 512)), (50, (256, 512, 1024, 2048))):
        features = ResNet(depth)(torch.zeros(1, 3, 64, 96))
        for (name, feature), ch, stride in zip(features.items(), channels, (4, 8, 16, 32), strict=True):
            assert feature.shape == (1, ch, 64 // stride, 96 // stride), name


def test_training_mode_returns_all_predictions_eval_only_final(tiny_config):
    model = Mask2Anomaly(tiny_config)
    x = torch.randn(2, 3, 64, 96)
    model.train()
    out = model(x)
    assert out["pred_logits"].shape == (2, 10, 20)
    assert out["pred_masks"].shape == (2, 10, 16, 24)
    assert len(out["aux_outputs"]) == tiny_config.decoder_layers
    model.eval()
    with torch.no_grad():
        eval_out = model(x)
    assert set(eval_out) == {"pred_logits", "pred_masks"}
    torch.testing.assert_close(eval_out["pred_logits"], out["pred_logits"].detach())


def test_unpadded_input_is_rejected(tiny_config):
    with pytest.raises(ValueError, match="multiple of 32"):
        Mask2Anomaly(tiny_config)(torch.zeros(1, 3, 60, 64))


def test_official_size_parameter_count():
    # 46,557,112 in the official state_dict = ours + 180,900 unused fusion_layer weights + 53,120 frozen-BN
    # affine values (buffers here, parameters in detectron2's BatchNorm).
    model = Mask2Anomaly(ModelConfig())
    assert sum(p.numel() for p in model.parameters()) == 46_557_112 - 180_900 - 53_120


def test_invalid_config_names_the_problem():
    with pytest.raises(ValueError, match="backbone_depth"):
        ModelConfig(backbone_depth=101)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden_dim=100, conv_dim=100)
