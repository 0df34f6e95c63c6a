"""Stage 1: train Mask2Anomaly with the official recipe (Hungarian matching, deep supervision, AdamW, poly).

    python training/train.py training/configs/cityscapes_r50_stage1.yaml
    torchrun --nproc_per_node 8 training/train.py training/configs/cityscapes_r50_stage1.yaml
    python training/train.py CONFIG --resume     # continue from OUTPUT/last_checkpoint.pt
"""
from __future__ import annotations

import sys

from m2a_core.training.loop import run_from_cli

if __name__ == "__main__":
    sys.exit(run_from_cli(sys.argv[1:], stage=1))
