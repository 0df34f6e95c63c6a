"""Weights files and checkpoint conversion, on real files."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from m2a_core.checkpoint import (
    convert_official,
    convert_torchvision_resnet,
    load_backbone_weights,
    load_model,
    read_foreign_state_dict,
    read_weights,
    save_weights,
)
from m2a_core.config import ModelConfig
from m2a_core.errors import CheckpointError
from m2a_core.modeling import Mask2Anomaly


def official_entries(reference_dir) -> dict[str, list[int]]:
    return json.loads((reference_dir / "official_m2a_r50_cityscapes_state_dict.json").read_text())["state_dict"]


def test_every_official_entry_is_consumed(reference_dir, official_checkpoint_factory, tmp_path):
    out = tmp_path / "m.safetensors"
    convert_official(official_checkpoint_factory(1), out)
    _, ours = read_weights(out)
    original = torch.load(official_checkpoint_factory(1), weights_only=True)["model"]
    dropped = {k for k in official_entries(reference_dir)
               if ".fusion_layer." in k or k == "criterion.empty_weight" or k.endswith("num_batches_tracked")}
    assert len(dropped) == 9 * 2 + 1 + 53
    for key in set(official_entries(reference_dir)) - dropped:
        ours_key = key.removeprefix("sem_seg_head.")
        assert torch.equal(ours[ours_key], original[key]), key
    assert len(ours) == len(official_entries(reference_dir)) - len(dropped)


def _save_official(path, state):
    torch.save({"model": state}, path)


@pytest.fixture(scope="module")
def official_state(official_checkpoint_factory):
    return torch.load(official_checkpoint_factory(1), weights_only=True)["model"]


def test_missing_unexpected_and_misshaped_entries_are_listed(official_state, tmp_path):
    state = dict(official_state)
    del state["sem_seg_head.predictor.query_embed.weight"]
    state["sem_seg_head.predictor.extra.weight"] = torch.zeros(3)
    state["sem_seg_head.predictor.decoder_norm.bias"] = torch.zeros(7)
    src = tmp_path / "broken.pth"
    _save_official(src, state)
    with pytest.raises(CheckpointError) as info:
        convert_official(src, tmp_path / "out.safetensors")
    message = str(info.value)
    assert "predictor.query_embed.weight" in message and "1 missing" in message
    assert "predictor.extra.weight" in message and "1 unexpected" in message
    assert "predictor.decoder_norm.bias" in message and "(7,)" in message
    assert not (tmp_path / "out.safetensors").exists()


def test_bare_state_dict_and_numpy_pickle_convert_identically(official_state, tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(official_state, bare)
    pkl = tmp_path / "model.pkl"
    with open(pkl, "wb") as handle:
        pickle.dump({"model": {k: v.numpy() for k, v in official_state.items()}, "__author__": "test"}, handle)
    convert_official(bare, tmp_path / "a.safetensors")
    convert_official(pkl, tmp_path / "b.safetensors")
    _, a = read_weights(tmp_path / "a.safetensors")
    _, b = read_weights(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_that_would_run_code_are_refused(tmp_path):
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _RunsCode()}, pth)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_foreign_state_dict(pth)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": _RunsCode()}}))
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_foreign_state_dict(pkl)


def test_weights_round_trip_with_config(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = Mask2Anomaly(tiny_config).eval()
    save_weights(model, tmp_path / "tiny.safetensors")
    loaded = load_model(tmp_path / "tiny.safetensors")
    assert loaded.config == tiny_config
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["pred_masks"], model(x)["pred_masks"])
    assert not list(tmp_path.glob(".*tmp")), "atomic write left a temporary file"


def test_bad_weights_files_get_clear_errors(tiny_config, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_weights(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="no m2a model config"):
        read_weights(tmp_path / "foreign.safetensors")
    (tmp_path / "official.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="convert it first"):
        read_weights(tmp_path / "official.pth")
    # A weights file whose tensors do not match its own config.
    model = Mask2Anomaly(tiny_config)
    state = {k: v for k, v in model.state_dict().items() if "class_embed" not in k}
    save_file(state, str(tmp_path / "partial.safetensors"),
              metadata={"format": "m2a-weights/1", "m2a_config": tiny_config.to_json()})
    with pytest.raises(CheckpointError, match="predictor.class_embed.weight"):
        load_model(tmp_path / "partial.safetensors")


def _torchvision_names(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our backbone names written the torchvision way, by hand (independent of the converter's rules)."""
    out = {}
    for key, value in ours.items():
        parts = key.split(".")
        if parts[0] == "stem":
            name = "conv1.weight" if parts[2] == "weight" else f"bn1.{parts[3]}"
        else:
            layer = f"layer{int(parts[0][3]) - 1}.{parts[1]}"
            if parts[2] == "shortcut":
                name = f"{layer}.downsample.0.weight" if parts[3] == "weight" else f"{layer}.downsample.1.{parts[4]}"
            else:
                index = parts[2][-1]
                name = f"{layer}.conv{index}.weight" if parts[3] == "weight" else f"{layer}.bn{index}.{parts[4]}"
        out[name] = value
    out["fc.weight"] = torch.zeros(1000, 2048)
    out["layer1.0.bn1.num_batches_tracked"] = torch.tensor(0)
    return out


def test_torchvision_resnet_initialises_the_backbone(tmp_path):
    torch.manual_seed(0)
    source = Mask2Anomaly(ModelConfig())
    for buffer in source.backbone.buffers():
        buffer.uniform_(0.5, 1.5)
    checkpoint = tmp_path / "resnet50.pth"
    torch.save({f"module.{k}": v for k, v in _torchvision_names(source.backbone.state_dict()).items()}, checkpoint)
    target = Mask2Anomaly(source.config)
    load_backbone_weights(target, checkpoint)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="unknown entries"):
        convert_torchvision_resnet({"head.weight": torch.zeros(1)})


def test_convert_cli(official_checkpoint_factory, tmp_path):
    out = tmp_path / "cli.safetensors"
    done = subprocess.run([sys.executable, "-m", "m2a_core", "convert", str(official_checkpoint_factory(1)), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ResNet-50" in done.stdout and out.is_file()
    missing = subprocess.run([sys.executable, "-m", "m2a_core", "convert", str(tmp_path / "nope.pth"), str(out)],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_pickled_numpy_arrays_keep_values(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = tmp_path / "x.pkl"
    with open(path, "wb") as handle:
        pickle.dump(arrays, handle)
    state = read_foreign_state_dict(path)
    assert torch.equal(state["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
