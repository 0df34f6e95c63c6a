"""Stage 2: mask contrastive fine-tuning with AnomalyMix, starting from a stage-1 model.

    python training/finetune_outliers.py training/configs/cityscapes_r50_stage2.yaml \
        --init out/cityscapes_r50_stage1/model_final.safetensors
    torchrun --nproc_per_node 4 training/finetune_outliers.py CONFIG --init STAGE1_WEIGHTS
"""
from __future__ import annotations

import sys

from m2a_core.training.loop import run_from_cli

if __name__ == "__main__":
    sys.exit(run_from_cli(sys.argv[1:], stage=2))
