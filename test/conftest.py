"""Shared fixtures: the reference data in ../shared and compact model configs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from m2a_core.config import ModelConfig

from helpers import TINY

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("M2A_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"

@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "golden_weights.py").is_file():
        pytest.fail(f"reference data not found at {REFERENCE} (set M2A_SHARED to the shared/ folder)")
    return REFERENCE


@pytest.fixture(scope="session")
def golden_weights(reference_dir: Path):
    """The module that makes the deterministic stand-in weights and test images."""
    sys.path.insert(0, str(reference_dir))
    try:
        import golden_weights
    finally:
        sys.path.remove(str(reference_dir))
    return golden_weights


@pytest.fixture(scope="session")
def official_checkpoint_factory(golden_weights, tmp_path_factory):
    """Write official-layout checkpoints ({'model': state_dict} .pth) for (seed, force_class)."""
    cache: dict[tuple, Path] = {}

    def make(seed: int = 1, force_class: int | None = None) -> Path:
        key = (seed, force_class)
        if key not in cache:
            state = golden_weights.make_state_dict(seed, force_class)
            path = tmp_path_factory.mktemp("official") / f"official_s{seed}_f{force_class}.pth"
            torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                        "iteration": 0}, path)
            cache[key] = path
        return cache[key]

    return make


@pytest.fixture()
def tiny_config() -> ModelConfig:
    return TINY



@pytest.fixture()
def tiny_weights(tmp_path) -> Path:
    """A compact model (seed 0) saved as an m2a weights file."""
    from m2a_core.checkpoint import save_weights
    from m2a_core.modeling import Mask2Anomaly

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(Mask2Anomaly(TINY), path)
    return path
