"""Evaluation metrics, exactly as the benchmarks define them (numpy/scipy only, no torch).

- ``pixel``: exact streaming AuPRC, FPR95 (three conventions), AUROC and ``threshold_at_tpr``;
- ``smiyc``: SegmentMeIfYouCan's binned pixel curve and its component metrics (sIoU, PPV, F1);
- ``openset``: open-IoU / open-mIoU (DenseHybrid);
- ``panoptic``: PQ/SQ/RQ (panopticapi) and the open-set version with an unknown class.
"""
