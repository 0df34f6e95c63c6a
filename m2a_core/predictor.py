"""The one predictor the ROS node, the bag tools, evaluation and the CLI all call.

``Predictor`` = preprocessing (``m2a_core.preprocess``) + a network backend (anything with
``run(batch) -> (pred_logits, pred_masks)``: PyTorch here; ONNX Runtime and TensorRT plug in the same
way) + the paper's inference (``m2a_core.inference``). By default it reproduces the official evaluation
exactly; every deviation (other input sizes, device-side resize, no refinement) is an explicit option.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from m2a_core.backends import make_backend
from m2a_core.backends.torch_backend import TorchBackend
from m2a_core.classes import ClassSet, get_class_set
from m2a_core.config import ModelConfig
from m2a_core.inference import AnomalyMaps, RefinementParams, anomaly_maps
from m2a_core.openset.panoptic import PanopticParams, panoptic_from_outputs
from m2a_core.openset.semantic import openset_semantic
from m2a_core.preprocess import (
    check_image,
    normalize_and_pad,
    resize_pil,
    resize_tensor,
    resized_shape,
    to_tensor,
)

__all__ = ["NetworkBackend", "Prediction", "Predictor", "PredictorOptions", "TorchBackend"]


class NetworkBackend(Protocol):
    config: ModelConfig
    device: torch.device

    def run(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, padded [B, 3, H, W] -> (pred_logits [B, Q, K+1], pred_masks [B, Q, H/4, W/4])."""
        ...


@dataclass(frozen=True)
class PredictorOptions:
    """How images become network inputs and outputs become maps. Defaults = the official evaluation."""

    short_side: int | None = 1024      # None: run at the input size (a deviation)
    max_size: int | None = 2048
    resize: str = "pil"                # "pil" (official, on uint8) or "device" (bilinear on the device)
    tta: bool = False                  # average the anomaly score with the horizontally flipped view
    refine: bool = True                # apply the refinement mask
    # Open-set outputs, off by default so the anomaly path costs nothing extra (m2a_core.openset).
    openset_threshold: float | None = None   # labels: UNKNOWN_ID where the score >= this ('m2a calibrate')
    openset_score: str = "anomaly"           # the score map the threshold applies to: anomaly or anomaly_no_refine
    panoptic: bool = False                   # open-set panoptic segments with unknown instances
    panoptic_params: PanopticParams = PanopticParams()
    panoptic_resolution: str = "full"        # "full" or "mask" (1/4 resolution, id map upsampled)

    def __post_init__(self) -> None:
        if self.resize not in ("pil", "device"):
            raise ValueError(f"resize must be 'pil' or 'device', got {self.resize!r}")
        if self.openset_score not in ("anomaly", "anomaly_no_refine"):
            raise ValueError(f"openset_score must be 'anomaly' or 'anomaly_no_refine', got {self.openset_score!r}")
        if self.panoptic_resolution not in ("full", "mask"):
            raise ValueError(f"panoptic_resolution must be 'full' or 'mask', got {self.panoptic_resolution!r}")


@dataclass
class Prediction:
    """Per-image results as numpy arrays at the input image's size."""

    anomaly: np.ndarray             # float32 [H, W]: refined score (flip-averaged with tta)
    anomaly_no_refine: np.ndarray   # float32 [H, W]
    semseg: np.ndarray              # uint8 [H, W]: argmax of the class map (unflipped view)
    pred_logits: np.ndarray         # float32 [Q, K+1]
    pred_masks: np.ndarray          # float32 [Q, Hp/4, Wp/4]: mask logits of the padded network input
    num_refine: int
    timings: dict[str, float] = field(default_factory=dict)
    labels: np.ndarray | None = None          # uint8 [H, W] open-set labels (with openset_threshold; the score is
                                              # flip-averaged with tta, the classes from the unflipped view)
    instances: np.ndarray | None = None       # int32 [H, W] panoptic segment ids, 0 none (with panoptic; unflipped)
    segments: list[dict] | None = None        # per segment: id, category_id or UNKNOWN_ID, score, area, bbox


class Predictor:
    def __init__(self, backend: NetworkBackend, options: PredictorOptions | None = None) -> None:
        self.backend = backend
        self.options = options or PredictorOptions()
        self.config = backend.config
        self.class_set: ClassSet = get_class_set(self.config.classes)
        self._refinement_params = RefinementParams(
            class_ids=self.config.refine_class_ids,
            score_threshold=self.config.refine_score_threshold,
            mask_threshold=self.config.refine_mask_threshold,
        )

    @property
    def refinement(self) -> RefinementParams | None:
        """The refinement of the default options (None without ``refine``)."""
        return self._refinement_params if self.options.refine else None

    def resolve_options(self, options: PredictorOptions | None = None, **overrides) -> PredictorOptions:
        """The options one call runs with: ``options`` (default: ``self.options``) with ``overrides`` replaced."""
        options = self.options if options is None else options
        return dataclasses.replace(options, **overrides) if overrides else options

    @classmethod
    def from_weights(cls, path: str | Path, device: torch.device | str = "cpu", backend: str = "torch",
                     precision: str = "fp32", backend_options: dict | None = None, **options) -> Predictor:
        """A predictor over a weights file: .safetensors for torch, an 'm2a export' .onnx for the others."""
        network = make_backend(backend, path, str(device), precision=precision, **(backend_options or {}))
        return cls(network, PredictorOptions(**options))

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def __call__(self, image: np.ndarray, options: PredictorOptions | None = None, **overrides) -> Prediction:
        """One image; ``options`` / keyword ``overrides`` (e.g. ``panoptic=True``) apply to this call only."""
        return self.predict_batch([image], options, **overrides)[0]

    def predict_batch(self, images: list[np.ndarray], options: PredictorOptions | None = None,
                      **overrides) -> list[Prediction]:
        """Images of the same size run as one network batch; others one by one (padding is per batch).

        ``options`` (a whole ``PredictorOptions``) and keyword ``overrides`` of its fields apply to this call
        only: ``self.options`` is not changed, so threads sharing a predictor may each ask for other outputs.
        """
        options = self.resolve_options(options, **overrides)
        results: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(check_image(image).shape[:2], []).append(index)
        for indices in groups.values():
            for index, prediction in zip(indices, self._predict_same_size([images[i] for i in indices], options),
                                         strict=True):
                results[index] = prediction
        return results  # type: ignore[return-value]

    def preprocess(self, images: list[np.ndarray],
                   options: PredictorOptions | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Same-size uint8 RGB images -> (normalised padded batch, resized unpadded size)."""
        options = self.options if options is None else options
        height, width = images[0].shape[:2]
        size = resized_shape(height, width, options.short_side, options.max_size)
        if options.resize == "pil":
            tensors = [to_tensor(resize_pil(im, size), self.device) for im in images]
        else:
            tensors = [resize_tensor(to_tensor(im, self.device), size) for im in images]
        batch = normalize_and_pad(tensors, self.config.pixel_mean, self.config.pixel_std,
                                  self.config.size_divisibility)
        return batch, size

    def postprocess(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, padded_size: tuple[int, int],
                    input_size: tuple[int, int], output_size: tuple[int, int],
                    options: PredictorOptions | None = None) -> AnomalyMaps:
        options = self.options if options is None else options
        refinement = self._refinement_params if options.refine else None
        return anomaly_maps(pred_logits, pred_masks, padded_size, input_size, output_size, refinement)

    def _openset_outputs(self, options: PredictorOptions, prediction: Prediction, maps: AnomalyMaps,
                         anomaly: torch.Tensor, pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                         padded_size: tuple[int, int], input_size: tuple[int, int],
                         output_size: tuple[int, int]) -> None:
        """Open-set labels and panoptic segments on the device, only when the options ask for them."""
        score = anomaly if options.openset_score == "anomaly" else maps.anomaly_no_refine
        if options.openset_threshold is not None:
            prediction.labels = openset_semantic(maps.semseg, score, options.openset_threshold,
                                                 num_classes=self.class_set.num_classes).cpu().numpy()
        if options.panoptic:
            result = panoptic_from_outputs(pred_logits, pred_masks, padded_size, input_size, output_size,
                                           self.class_set, options.panoptic_params, options.panoptic_resolution,
                                           anomaly=score)
            prediction.instances = result.id_map.cpu().numpy()
            prediction.segments = result.segments

    @torch.inference_mode()
    def _predict_same_size(self, images: list[np.ndarray], options: PredictorOptions) -> list[Prediction]:
        output_size = images[0].shape[:2]
        views = images + ([np.ascontiguousarray(im[:, ::-1]) for im in images] if options.tta else [])
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        batch, input_size = self.preprocess(views, options)
        sync()
        t1 = time.perf_counter()
        pred_logits, pred_masks = self.backend.run(batch)
        sync()
        t2 = time.perf_counter()
        padded_size = (int(batch.shape[2]), int(batch.shape[3]))
        maps = [self.postprocess(pred_logits[i], pred_masks[i], padded_size, input_size, output_size, options)
                for i in range(len(views))]
        results = []
        n = len(images)
        for i in range(n):
            anomaly = maps[i].anomaly
            if options.tta:
                anomaly = (anomaly + maps[n + i].anomaly.flip(-1)) / 2.0
            prediction = Prediction(
                anomaly=anomaly.float().cpu().numpy(),
                anomaly_no_refine=maps[i].anomaly_no_refine.float().cpu().numpy(),
                semseg=maps[i].semseg.to(torch.uint8).cpu().numpy(),
                pred_logits=pred_logits[i].float().cpu().numpy(),
                pred_masks=pred_masks[i].float().cpu().numpy(),
                num_refine=maps[i].num_refine,
            )
            self._openset_outputs(options, prediction, maps[i], anomaly, pred_logits[i], pred_masks[i], padded_size,
                                  input_size, output_size)
            results.append(prediction)
        sync()
        t3 = time.perf_counter()
        for r in results:
            r.timings = {"preprocess": (t1 - t0) / n, "network": (t2 - t1) / n, "postprocess": (t3 - t2) / n}
        return results
