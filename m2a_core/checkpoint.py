"""Weights files: our safetensors format, and conversion from official and torchvision checkpoints.

Our format is safetensors (no pickle: loading a weights file can never run code) with the model
config as JSON in the metadata, so one file rebuilds its model. Official detectron2 checkpoints
(``.pth`` with ``{"model": state_dict}`` or a bare state_dict, ``.pkl`` numpy dicts) are converted
by name: every official entry is consumed, except the unused GMA ``fusion_layer``, the loss buffer
``criterion.empty_weight`` and BatchNorm ``num_batches_tracked`` counters, which are dropped on purpose.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from m2a_core.classes import get_class_set
from m2a_core.config import ModelConfig
from m2a_core.errors import CheckpointError

FORMAT = "m2a-weights/1"
CONFIG_KEY = "m2a_config"
DROPPED_OFFICIAL_KEYS = re.compile(r"(\.fusion_layer\.|^criterion\.empty_weight$|\.num_batches_tracked$)")


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the finished file into place: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_weights(model: torch.nn.Module, path: str | os.PathLike, config: ModelConfig | None = None) -> None:
    """Write ``model``'s state_dict and config as one safetensors file, atomically."""
    config = config or model.config
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, CONFIG_KEY: config.to_json()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_weights(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Return (config, state_dict) of one of our weights files, with clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix in (".pth", ".pkl", ".pt"):
        raise CheckpointError(
            f"{path} is a {path.suffix} checkpoint, not an m2a weights file: convert it first with "
            f"'m2a convert {path} OUT.safetensors'")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors weights file: {exc}") from None
    if metadata.get("format") != FORMAT or CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} has no m2a model config in its metadata (format {metadata.get('format')!r})")
    return ModelConfig.from_json(metadata[CONFIG_KEY]), state


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Build the model a weights file describes and load it strictly; returns the model in eval mode."""
    from m2a_core.modeling import Mask2Anomaly

    config, state = read_weights(path)
    model = Mask2Anomaly(config)
    load_state_dict_strict(model, state, source=str(path))
    return model.to(device).eval()


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    check_keys(expected, state, source)
    model.load_state_dict(state, strict=True)


def check_keys(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one error listing every missing, unexpected and wrongly shaped entry."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Reading foreign checkpoints without letting them run code.

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for detectron2 ``.pkl`` files: only numpy arrays and plain containers may be built."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def read_foreign_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.pth``/``.pt`` (torch, weights_only) or ``.pkl`` (numpy) checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    if path.suffix == ".pkl":
        try:
            data = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise CheckpointError(f"cannot read {path} as a numpy pickle: {exc}") from None
    else:
        try:
            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(
                f"cannot read {path} as a PyTorch checkpoint with weights_only=True "
                f"(checkpoints that need code to load are refused): {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    elif isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path} holds no state_dict (expected a dict of tensors or {{'model': ...}})")
    state = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, (int, float, np.generic)) and not isinstance(value, bool):
            value = torch.tensor(value)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[str(key)] = value
    return state


def infer_official_config(state: dict[str, torch.Tensor], classes: str | None = None) -> ModelConfig:
    """Read model sizes off an official state_dict so COCO or compact checkpoints convert too."""
    def count(pattern: str) -> int:
        found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
        return max(found) + 1 if found else 0

    try:
        num_classes = state["sem_seg_head.predictor.class_embed.bias"].shape[0] - 1
        hidden = state["sem_seg_head.predictor.query_feat.weight"].shape[1]
        queries = state["sem_seg_head.predictor.query_feat.weight"].shape[0]
        conv_dim = state["sem_seg_head.pixel_decoder.mask_features.weight"].shape[1]
        mask_dim = state["sem_seg_head.pixel_decoder.mask_features.weight"].shape[0]
        enc_ffn = state["sem_seg_head.pixel_decoder.transformer.encoder.layers.0.linear1.weight"].shape[0]
        dec_ffn = state["sem_seg_head.predictor.transformer_ffn_layers.0.linear1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a Mask2Anomaly checkpoint: entry {exc.args[0]!r} is missing") from None
    res4_blocks = count(r"backbone\.res4\.(\d+)\.")
    bottleneck = "backbone.res2.0.conv3.weight" in state
    depth = 50 if bottleneck else (34 if res4_blocks == 6 else 18)
    if classes is None:
        classes = "cityscapes" if num_classes == 19 else None
    if classes is None:
        raise CheckpointError(f"the checkpoint has {num_classes} classes: name its class set with --classes")
    class_set = get_class_set(classes)
    if class_set.num_classes != num_classes:
        raise CheckpointError(
            f"class set {classes!r} has {class_set.num_classes} classes but the checkpoint has {num_classes}")
    try:
        return ModelConfig(
            backbone_depth=depth, conv_dim=conv_dim, mask_dim=mask_dim, hidden_dim=hidden, num_queries=queries,
            num_classes=num_classes, classes=classes, encoder_ffn_dim=enc_ffn, decoder_ffn_dim=dec_ffn,
            encoder_layers=count(r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\."),
            decoder_layers=count(r"sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\."),
            norm_groups=min(32, conv_dim),
        )
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def convert_official_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official (detectron2) names -> ours: drop the known unused entries and the ``sem_seg_head.`` prefix."""
    converted = {}
    for key, value in state.items():
        if DROPPED_OFFICIAL_KEYS.search(key):
            continue
        converted[key.removeprefix("sem_seg_head.")] = value.float() if value.is_floating_point() else value
    return converted


def convert_official(src: str | os.PathLike, out: str | os.PathLike, classes: str | None = None) -> ModelConfig:
    """Convert an official checkpoint into our weights file; every entry is checked against the model."""
    from m2a_core.modeling import Mask2Anomaly

    state = read_foreign_state_dict(src)
    config = infer_official_config(state, classes)
    model = Mask2Anomaly(config)
    load_state_dict_strict(model, convert_official_state_dict(state), source=str(src))
    save_weights(model, out, config)
    return config


def convert_torchvision_resnet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision / Barlow Twins ResNet names -> our backbone's (detectron2) names.

    ``fc.*`` and ``num_batches_tracked`` are dropped; ``module.`` / ``backbone.`` prefixes (DDP and
    Barlow Twins full checkpoints) are stripped. Unknown names are an error.
    """
    out, unknown = {}, []
    for key, value in state.items():
        key = re.sub(r"^(module\.)?(backbone\.)?", "", key)
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        stage = re.match(r"^layer(\d)\.(\d+)\.(.+)$", key)
        if key == "conv1.weight":
            new = "stem.conv1.weight"
        elif key.startswith("bn1."):
            new = "stem.conv1.norm." + key[4:]
        elif stage:
            res, block, rest = f"res{int(stage.group(1)) + 1}", stage.group(2), stage.group(3)
            rest = re.sub(r"^conv(\d)\.weight$", r"conv\1.weight", rest)
            rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
            rest = re.sub(r"^downsample\.0\.weight$", "shortcut.weight", rest)
            rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
            new = f"{res}.{block}.{rest}"
        else:
            unknown.append(key)
            continue
        out[new] = value
    if unknown:
        raise CheckpointError(f"not a torchvision ResNet state_dict: unknown entries {unknown[:10]}")
    return out


def load_backbone_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Initialise ``model.backbone`` from a torchvision / Barlow Twins ResNet checkpoint (all keys checked)."""
    state = convert_torchvision_resnet(read_foreign_state_dict(path))
    load_state_dict_strict(model.backbone, state, source=str(path))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
