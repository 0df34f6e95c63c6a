"""The training config: one YAML file per recipe, parsed into dataclasses with clear errors.

Sections: ``model`` (``ModelConfig`` fields), ``init`` (backbone / weights / checkpoint to start from),
``data``, ``augment``, ``anomaly_mix``, ``loss``, ``solver``, ``output``, ``validation`` and ``seed``. Unknown
keys are errors (a typo must not silently fall back to a default). Defaults are the official Cityscapes
stage-1 recipe; ``training/configs/*.yaml`` spell out each recipe in full.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from m2a_core.config import ModelConfig
from m2a_core.errors import M2AError
from m2a_core.training.augment import OFFICIAL_SHORT_SIDES, AugmentConfig


@dataclass
class InitConfig:
    backbone: str | None = None     # torchvision / Barlow Twins ResNet checkpoint (.pth)
    weights: str | None = None      # our safetensors weights (e.g. stage-1 export)
    checkpoint: str | None = None   # a training checkpoint (model weights only are taken)


@dataclass
class DataConfig:
    kind: str = "cityscapes"
    root: str = "datasets/cityscapes"
    split: str = "train"
    num_workers: int = 4
    annotations: str = "panoptic_train2017"   # coco_panoptic only
    images: str = "train2017"                 # coco_panoptic only


@dataclass
class AugmentSection:
    short_sides: list[int] = field(default_factory=lambda: list(OFFICIAL_SHORT_SIDES))
    max_size: int = 4096
    crop: list[int] | None = field(default_factory=lambda: [380, 760])
    photometric: bool = True
    flip: bool = True
    class_uniform: float = 0.0   # fraction of class-uniform crops (not in the official recipe)


@dataclass
class AnomalyMixConfig:
    pool: str | None = None   # folder written by prepare_coco_outliers.py; None = no AnomalyMix
    probability: float = 0.2


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    outlier_weight: float = 0.0   # stage 2: 1.0
    outlier_margin: float = 1.0   # official config 1.0; the paper 0.75
    deep_supervision: bool = True


@dataclass
class SolverConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    backbone_multiplier: float = 0.1
    max_iter: int = 90000
    batch_size: int = 16          # global, over all processes
    clip_norm: float = 0.01
    poly_power: float = 0.9
    amp: bool = True              # CUDA only; ignored on CPU
    # bfloat16 autocast on CPU (no loss scaling needed; losses and matching stay float32): measured 10 % faster
    # steps for the demo's stage 1 on an AVX-512-bf16 CPU. Ignored on CUDA (see amp).
    cpu_bf16: bool = False
    freeze_backbone: bool = True
    # Train the backbone's BatchNorms (batch statistics) instead of keeping them frozen: for a backbone trained
    # from scratch (no pretrained statistics). The exported weights hold them frozen again (same layout).
    trainable_backbone_norm: bool = False


@dataclass
class OutputConfig:
    dir: str = "out/train"
    checkpoint_period: int = 5000
    log_period: int = 20


@dataclass
class ValidationConfig:
    kind: str | None = None       # cityscapes | streethazards; None = no validation
    root: str | None = None
    split: str = "val"
    period: int = 5000
    max_images: int | None = None


@dataclass
class TrainConfig:
    model: dict = field(default_factory=dict)
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentSection = field(default_factory=AugmentSection)
    anomaly_mix: AnomalyMixConfig = field(default_factory=AnomalyMixConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    def augment_config(self) -> AugmentConfig:
        aug = self.augment
        return AugmentConfig(short_sides=tuple(aug.short_sides), max_size=aug.max_size,
                             crop=tuple(aug.crop) if aug.crop else None, photometric=aug.photometric, flip=aug.flip,
                             class_uniform=aug.class_uniform)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> TrainConfig:
        if not isinstance(raw, dict):
            raise M2AError(f"{source}: a training config must be a mapping, got {type(raw).__name__}")
        values = {}
        known = {f.name: f for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise M2AError(f"{source}: unknown section {key!r}; known: {sorted(known)}")
            section_type = SECTION_TYPES.get(key)
            values[key] = _section(section_type, value, f"{source}: {key}") if section_type else value
        config = cls(**values)
        config.validate(source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise M2AError(f"training config {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise M2AError(f"training config {path} is not valid YAML: {exc}") from None
        return cls.from_dict(raw, str(path))

    def validate(self, source: str) -> None:
        problems = []
        try:
            self.model_config()
        except M2AError as exc:
            problems.append(f"model: {exc}")
        if self.solver.max_iter < 1:
            problems.append(f"solver.max_iter must be >= 1, got {self.solver.max_iter}")
        if self.solver.batch_size < 1:
            problems.append(f"solver.batch_size must be >= 1, got {self.solver.batch_size}")
        if self.solver.trainable_backbone_norm and self.solver.freeze_backbone:
            problems.append("solver.trainable_backbone_norm needs a trainable backbone (solver.freeze_backbone: "
                            "false)")
        if self.loss.outlier_weight > 0 and not self.anomaly_mix.pool:
            problems.append("loss.outlier_weight > 0 needs anomaly_mix.pool (the outlier objects)")
        if not 0 <= self.anomaly_mix.probability <= 1:
            problems.append(f"anomaly_mix.probability must be in [0, 1], got {self.anomaly_mix.probability}")
        try:
            self.augment_config()
        except (TypeError, ValueError) as exc:
            problems.append(f"augment: {exc}")
        if self.loss.num_points < 1 or not 0 <= self.loss.importance_sample_ratio <= 1:
            problems.append("loss.num_points must be >= 1 and loss.importance_sample_ratio in [0, 1]")
        if self.loss.oversample_ratio < 1:
            problems.append(f"loss.oversample_ratio must be >= 1, got {self.loss.oversample_ratio}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if sum(x is not None for x in (self.init.weights, self.init.checkpoint)) > 1:
            problems.append("init: give either weights or checkpoint, not both")
        if problems:
            raise M2AError(f"{source}: " + "; ".join(problems))


SECTION_TYPES = {"init": InitConfig, "data": DataConfig, "augment": AugmentSection,
                 "anomaly_mix": AnomalyMixConfig, "loss": LossConfig, "solver": SolverConfig,
                 "output": OutputConfig, "validation": ValidationConfig}


def _section(section_type, value, where: str):
    if value is None:
        return section_type()
    if not isinstance(value, dict):
        raise M2AError(f"{where} must be a mapping, got {type(value).__name__}")
    known = {f.name for f in fields(section_type)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise M2AError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return section_type(**value)
