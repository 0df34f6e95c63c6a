"""Miniature ablation of Mask2Anomaly's components (paper Table V(a)) on the held-out synthetic benchmark.

    python training/ablation.py --out out/demo            # after training/make_demo_model.py --out out/demo
    python training/ablation.py --out out/demo --resume   # keep / resume the baseline's training
    python training/ablation.py --out /tmp/smoke --smoke  # on a make_demo_model.py --smoke run (the test)

Rows, all scored with the mask-level MSP (1 - max_c L) on the same held-out benchmark and predictor options:
1. the Mask2Former baseline: a stage-1 model with plain masked attention (``cross_attention: masked``) instead
   of global masked attention (GMA), trained here on the run's data with the demo's stage-1 config and
   schedule (``make_demo_model.stage_config``), into ``<out>/ablation/stage1_masked``;
2. + GMA: the run's stage-1 model; 3. + the refinement mask on it;
4. + mask contrastive learning (with AnomalyMix): the run's stage-2 model, 5. with the refinement mask (full).
Rows 1, 2, 4, 5 are the paper's sequence; row 3 (the refinement mask without contrastive learning) is extra.
Writes ``ablation.json``, ``ablation.md`` and ``ablation.png`` (AuPRC and FPR95 per row) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "training"):  # m2a_core, and make_demo_model beside this script
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from m2a_core.checkpoint import atomic_write  # noqa: E402
from m2a_core.errors import M2AError  # noqa: E402

BASELINE_DIR = "ablation/stage1_masked"   # inside --out: the plain masked-attention stage-1 training
ROWS = (  # (name, weights inside --out, refinement mask)
    ("Mask2Former masked attention + MSP (stage 1)", f"{BASELINE_DIR}/model_final.safetensors", False),
    ("GMA + MSP (stage 1)", "stage1/model_final.safetensors", False),
    ("GMA + MSP + refinement mask (stage 1)", "stage1/model_final.safetensors", True),
    ("GMA + MSP + mask contrastive (stage 2)", "stage2/model_final.safetensors", False),
    ("GMA + MSP + mask contrastive + refinement mask (full)", "stage2/model_final.safetensors", True),
)
RUN_WEIGHTS = ("stage1/model_final.safetensors", "stage2/model_final.safetensors")  # made by make_demo_model.py
COLUMNS = (("AuPRC", "AuPRC"), ("FPR95", "FPR95"), ("sIoU", "sIoU"), ("PPV", "PPV"), ("mean_F1", "mean F1"))


def log(message: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {message}", flush=True)


def check_run(out: Path, smoke: bool) -> None:
    """``out`` must be a finished make_demo_model.py run made with the same data plan (--smoke or not) and
    seeds, so that ``make_data(reuse=True)`` returns its data as they are."""
    from make_demo_model import FULL, SMOKE, plan_description

    test_root = out / "data" / "anomaly_test"
    marker = out / "data" / "plan.json"
    missing = [str(path) for path in (*(out / w for w in RUN_WEIGHTS), test_root, marker) if not path.exists()]
    if missing:
        raise M2AError(f"{out} is not a finished make_demo_model.py run: missing {missing}")
    try:
        recorded = json.loads(marker.read_text())
    except json.JSONDecodeError as exc:
        raise M2AError(f"{marker} is not a make_demo_model.py data plan: {exc}") from None
    plans = {flag: json.loads(plan_description(plan)) for flag, plan in ((True, SMOKE), (False, FULL))}
    if recorded == plans[smoke]:
        return
    if recorded == plans[not smoke]:
        raise M2AError(f"{out} was made {'without' if smoke else 'with'} make_demo_model.py --smoke: "
                       f"{'drop' if smoke else 'pass'} --smoke")
    raise M2AError(f"{out} holds data of a plan this make_demo_model.py does not make ({recorded}): rerun it")


def train_baseline(out: Path, plan, smoke: bool, resume: bool, progress: bool) -> Path:
    """Stage 1 with plain masked attention: the demo's stage-1 config, data and schedule; only the decoder's
    cross-attention differs. Resumable like make_demo_model.py's stages."""
    from make_demo_model import STAGE1, make_data, run_stage, stage_config

    data = make_data(out / "data", plan, progress, reuse=True)  # the run's own data (check_run matched the plan)
    config = stage_config(STAGE1, out, data, 1, plan.stage1_iter, smoke)
    config.model = {**config.model, "cross_attention": "masked"}
    config.output.dir = str(out / BASELINE_DIR)
    config.validate(f"{STAGE1} with cross_attention: masked")
    return run_stage(config, resume, progress)[0]


def evaluate_row(weights: Path, refine: bool, test_root: Path, short_side: int, progress: bool) -> dict:
    from tqdm import tqdm

    from m2a_core.datasets import open_dataset
    from m2a_core.metrics.evaluate import evaluate_anomaly
    from m2a_core.predictor import Predictor

    predictor = Predictor.from_weights(weights, "cpu", short_side=short_side, max_size=8 * short_side,
                                       refine=refine)
    benchmark = open_dataset("fs_lost_and_found", test_root)
    frames = [(s.name, predictor(benchmark.read_image(s)).anomaly, benchmark.read_labels(s))
              for s in tqdm(benchmark.samples, desc=weights.parent.name, disable=not progress)]
    results, _ = evaluate_anomaly(lambda: iter(frames), track="obstacle", progress=progress)
    return results


def plot_rows(summary: dict[str, dict], path: Path) -> None:
    """AuPRC (higher is better) and FPR95 (lower is better) per row, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(names) + 1.5), sharey=True)
    for axis, (key, title) in zip(axes, (("AuPRC", "AuPRC % (higher is better)"),
                                         ("FPR95", "FPR95 % (lower is better)")), strict=True):
        values = [100 * (summary[n][key] if summary[n][key] is not None else float("nan")) for n in names]
        bars = axis.barh(range(len(names)), values, color="tab:blue" if key == "AuPRC" else "tab:orange")
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
        axis.set_xlim(0, 105)
        axis.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()  # row 1 at the top, as in the table
    figure.suptitle("Miniature ablation (paper Table V(a)), held-out synthetic benchmark", fontsize=10)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=80, bbox_inches="tight"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder of a make_demo_model.py run")
    parser.add_argument("--smoke", action="store_true",
                        help="the run was made with make_demo_model.py --smoke: its tiny plan (2 iterations)")
    parser.add_argument("--resume", action="store_true",
                        help="keep a finished baseline training, resume an interrupted one (default: train afresh)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (default 2, as make_demo_model.py, so both time stage 1 alike)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except M2AError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise M2AError(f"--threads must be >= 1, got {args.threads}")
    import torch
    from make_demo_model import FULL, SMOKE

    torch.set_num_threads(args.threads)
    out, plan, progress = Path(args.out), SMOKE if args.smoke else FULL, not args.no_progress
    check_run(out, args.smoke)
    start = time.perf_counter()
    log(f"stage 1 with plain masked attention -> {out / BASELINE_DIR}")
    train_baseline(out, plan, args.smoke, args.resume, progress)
    log(f"baseline trained in {time.perf_counter() - start:.0f} s")
    test_root = out / "data" / "anomaly_test"
    rows = {name: evaluate_row(out / weights, refine, test_root, plan.height, progress)
            for name, weights, refine in ROWS}

    from m2a_core.metrics.evaluate import json_ready

    lines = ["# Miniature ablation (paper Table V(a)) on the held-out synthetic benchmark", "",
             "Made by `python training/ablation.py` on the run of `training/make_demo_model.py`: row 1 is a stage-1 "
             "model with Mask2Former's plain masked attention trained on the same data with the same config and "
             "schedule as the run's stage 1 (GMA). Anomaly score: mask-level MSP. Values in percent; FPR95 at the "
             "first TPR >= 0.95; components with obstacle-track size filters at the best-F1 threshold.", "",
             "| " + " | ".join(["model", *(c for _, c in COLUMNS)]) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, result in rows.items():
        lines.append("| " + " | ".join([name, *(f"{100 * result[k]:.2f}" for k, _ in COLUMNS)]) + " |")
    text = "\n".join(lines) + "\n"
    summary = json_ready({name: {k: result[k] for k, _ in COLUMNS} for name, result in rows.items()})
    atomic_write(out / "ablation.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    atomic_write(out / "ablation.md", lambda tmp: Path(tmp).write_text(text))
    plot_rows(summary, out / "ablation.png")
    print(text, end="")
    log(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
