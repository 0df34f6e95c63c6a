"""The shared training loop (stage 1 and stage 2), in one process or under ``torchrun`` with DDP.

Distributed: ``torchrun --nproc_per_node N training/train.py CONFIG`` sets RANK / WORLD_SIZE / LOCAL_RANK;
each process takes ``batch_size / N`` samples of every global batch, the model is wrapped in DDP without
unused-parameter search (the frozen backbone has no trainable parameter, every other one is used), DDP
averages gradients and the criterion all-reduces its normalisers, so N processes train exactly like one
process on the global batch. Backend: NCCL on CUDA, gloo on CPU.

Outputs in ``output.dir``: ``last_checkpoint.pt`` (atomic, resumable), ``metrics.jsonl`` (one line per
logged iteration: every loss term, total, lr, gradient norm; validation lines too), ``loss_curve.png``,
``val_<iteration>.json`` and, at the end, ``model_final.safetensors`` (our weights format).
TensorBoard is not used (no extra dependency): the JSONL log and the PNG curve carry the same scalars.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from m2a_core.checkpoint import atomic_write, load_backbone_weights, read_weights, save_weights
from m2a_core.errors import M2AError
from m2a_core.modeling import Mask2Anomaly
from m2a_core.training import checkpointing
from m2a_core.training.anomalymix import AnomalyMix, OutlierPool
from m2a_core.training.backbone_norms import freeze_batch_norms, thaw_batch_norms
from m2a_core.training.config import TrainConfig
from m2a_core.training.criterion import SetCriterion, distributed_mean
from m2a_core.training.data import IterationBatches, TrainingSet, build_dataset, make_batch
from m2a_core.training.optim import build_optimizer, build_scheduler, clip_gradients

FINAL_WEIGHTS = "model_final.safetensors"
METRICS = "metrics.jsonl"


# ---------------------------------------------------------------------------------------------------
# Processes and devices.

def init_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when launched by torchrun with N > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise M2AError("device: cuda was requested but no CUDA device is available")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------------------------------------
# Model, criterion, data.

def load_initial_weights(model: Mask2Anomaly, config: TrainConfig) -> None:
    if config.init.backbone:
        load_backbone_weights(model, config.init.backbone)
    if config.init.weights:
        weights_config, state = read_weights(config.init.weights)
        if weights_config != model.config:
            raise M2AError(f"init.weights {config.init.weights} was trained with a different model config")
        model.load_state_dict(state, strict=True)
    if config.init.checkpoint:
        state = checkpointing.load_checkpoint(config.init.checkpoint)
        try:
            model.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise M2AError(f"init.checkpoint {config.init.checkpoint} does not match the model: {exc}") from None


def build_model(config: TrainConfig, load_init: bool = True) -> Mask2Anomaly:
    """The model of the config with its initial weights (backbone, weights file or training checkpoint);
    ``load_init=False`` when resuming: the checkpoint replaces them, so those files need not exist."""
    model_config = config.model_config()
    model = Mask2Anomaly(model_config)
    if load_init:
        load_initial_weights(model, config)
    if config.solver.freeze_backbone:
        # SPEC: the backbone is frozen in both stages (its BatchNorms always are).
        for param in model.backbone.parameters():
            param.requires_grad_(False)
    if config.solver.trainable_backbone_norm:
        thaw_batch_norms(model.backbone)
    return model


def build_criterion(config: TrainConfig, num_classes: int) -> SetCriterion:
    loss = config.loss
    return SetCriterion(
        num_classes, class_weight=loss.class_weight, mask_weight=loss.mask_weight, dice_weight=loss.dice_weight,
        no_object_weight=loss.no_object_weight, num_points=loss.num_points, oversample_ratio=loss.oversample_ratio,
        importance_sample_ratio=loss.importance_sample_ratio, outlier_weight=loss.outlier_weight,
        outlier_margin=loss.outlier_margin, deep_supervision=loss.deep_supervision)


def build_training_set(config: TrainConfig, num_classes: int) -> TrainingSet:
    data = config.data
    options = {"annotations": data.annotations, "images": data.images} if data.kind == "coco_panoptic" else {}
    dataset = build_dataset(data.kind, data.root, data.split, **options)
    dataset_classes = getattr(dataset, "num_classes", num_classes)
    if dataset_classes != num_classes:
        raise M2AError(f"data: the {data.kind} dataset has {dataset_classes} classes but model.num_classes is "
                       f"{num_classes}")
    mix = None
    if config.anomaly_mix.pool:
        mix = AnomalyMix(OutlierPool(config.anomaly_mix.pool), config.anomaly_mix.probability)
    return TrainingSet(dataset, num_classes, config.augment_config(), config.seed, config.solver.batch_size, mix)


# ---------------------------------------------------------------------------------------------------
# Logging.

def write_metrics(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    if not train:
        return
    iterations = [r["iteration"] for r in train]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(iterations, [r["loss"] for r in train], label="total")
    for name in ("loss_ce", "loss_mask", "loss_dice", "loss_ood"):
        if name in train[0]:
            axes[0].plot(iterations, [r[name] for r in train], label=f"{name} (final prediction)")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("weighted loss")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title("training losses")
    val = [r for r in records if "val/mIoU" in r]
    if val:
        axes[1].plot([r["iteration"] for r in val], [r["val/mIoU"] for r in val], "o-", label="mIoU")
        for key in ("val/AuPRC", "val/FPR95"):
            if key in val[0]:
                axes[1].plot([r["iteration"] for r in val], [r[key] for r in val], "o-", label=key[4:])
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("iteration")
    axes[1].set_title("validation")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Validation.

@torch.no_grad()
def validate(model: Mask2Anomaly, config: TrainConfig, device: torch.device,
             progress: bool = True) -> dict[str, float]:
    """mIoU over the validation split and, where it has outlier pixels (254), pixel anomaly metrics."""
    from m2a_core.inference import anomaly_maps
    from m2a_core.preprocess import normalize_and_pad, to_tensor

    val = config.validation
    dataset = build_dataset(val.kind, val.root, val.split)
    num_classes = model.config.num_classes
    count = len(dataset) if val.max_images is None else min(len(dataset), val.max_images)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    accumulator = None
    was_training = model.training
    model.eval()
    for index in tqdm(range(count), desc="validation", leave=False, disable=not progress):
        sample = dataset[index]
        image = to_tensor(sample.image, device)
        batch = normalize_and_pad([image], model.config.pixel_mean, model.config.pixel_std)
        outputs = model(batch, aux=False)
        size = tuple(sample.semantic.shape)
        maps = anomaly_maps(outputs["pred_logits"][0], outputs["pred_masks"][0], tuple(batch.shape[-2:]), size,
                            size)
        truth = sample.semantic.astype(np.int64)
        pred = maps.semseg.cpu().numpy()
        valid = truth < num_classes
        confusion += np.bincount(truth[valid] * num_classes + pred[valid],
                                 minlength=num_classes**2).reshape(num_classes, num_classes)
        if (truth == 254).any():
            if accumulator is None:
                try:
                    from m2a_core.metrics.pixel import PixelScoreAccumulator
                except ImportError:
                    raise M2AError("validation with anomaly pixels needs m2a_core.metrics (the evaluation "
                                   "package)") from None
                accumulator = PixelScoreAccumulator()
            anomaly_labels = np.where(valid, 0, np.where(truth == 254, 1, 255)).astype(np.uint8)
            accumulator.update(maps.anomaly.cpu().numpy().astype(np.float32), anomaly_labels)
    model.train(was_training)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    results = {"val/mIoU": float(np.mean(intersection[present] / union[present])) if present.any() else 0.0,
               "val/images": count}
    if accumulator is not None:
        metrics = accumulator.compute()
        results.update({f"val/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    return results


# ---------------------------------------------------------------------------------------------------
# The loop.

def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the exported final weights. ``progress``: the tqdm bar."""
    started = time.perf_counter()
    rank, world, device = init_distributed(config)
    solver = config.solver
    if solver.batch_size % world:
        raise M2AError(f"solver.batch_size {solver.batch_size} is not divisible by the {world} processes")
    local_batch = solver.batch_size // world
    out_dir = Path(config.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)

    model = build_model(config, load_init=not resume).to(device).train()
    num_classes = model.config.num_classes
    criterion = build_criterion(config, num_classes).to(device)
    optimizer = build_optimizer(model, solver.lr, solver.weight_decay, solver.backbone_multiplier)
    scheduler = build_scheduler(optimizer, solver.max_iter, solver.poly_power)
    use_amp = solver.amp and device.type == "cuda"
    # Mixed precision for the model's forward (losses cast to float32 themselves): fp16 with loss scaling on CUDA,
    # bf16 (no scaling needed) on CPU.
    autocast_dtype = torch.float16 if use_amp else torch.bfloat16 if solver.cpu_bf16 and device.type == "cpu" else None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if device.type == "cuda" else None

    start = 0
    earlier_seconds = 0.0  # training time of the checkpoint resumed from
    checkpoint_path = out_dir / checkpointing.LAST
    records: list[dict] = []
    if resume:
        if not checkpoint_path.is_file():
            raise M2AError(f"--resume: no checkpoint {checkpoint_path} to resume from")
        state = checkpointing.load_checkpoint(checkpoint_path)
        start = checkpointing.restore(state, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        earlier_seconds = float(state.get("seconds", 0.0))
        # Lines logged after the checkpoint by the interrupted run are dropped: they are recomputed.
        records = [r for r in read_metrics(out_dir / METRICS) if r.get("iteration", 0) <= start]
        if rank == 0:
            print(f"resumed from iteration {start} ({checkpoint_path})", flush=True)
    elif rank == 0 and (out_dir / METRICS).exists():
        (out_dir / METRICS).unlink()

    trained = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False,
            # Frozen statistics are identical everywhere; trained BatchNorm statistics follow rank 0's.
            broadcast_buffers=config.solver.trainable_backbone_norm)

    training_set = build_training_set(config, num_classes)
    batches = IterationBatches(training_set, start, solver.max_iter, rank, local_batch)
    workers = config.data.num_workers
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    use_outlier = config.loss.outlier_weight > 0
    bar = tqdm(total=solver.max_iter, initial=start, desc="train", disable=rank != 0 or not progress,
               dynamic_ncols=True)
    iteration = start
    for samples in loader:
        images, targets, semantic = make_batch(samples, model.config.pixel_mean, model.config.pixel_std, device)
        with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
            outputs = trained(images)
        losses = criterion(outputs, targets, semantic if use_outlier else None)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise M2AError(f"iteration {iteration + 1}: the loss is not finite ({float(total)})")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
            grad_norm = clip_gradients(model, solver.clip_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            grad_norm = clip_gradients(model, solver.clip_norm)
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        iteration += 1
        bar.update(1)

        log_now = iteration % config.output.log_period == 0 or iteration == solver.max_iter
        if log_now:
            record = {"iteration": iteration, "lr": lr, "grad_norm": float(grad_norm),
                      "loss": float(distributed_mean(total))}
            record.update({k: float(distributed_mean(v)) for k, v in losses.items()})
            records.append(record)
            if rank == 0:
                bar.set_postfix(loss=f"{record['loss']:.4f}")
        if config.validation.kind and (iteration % config.validation.period == 0 or iteration == solver.max_iter):
            if rank == 0:
                results = validate(model, config, device, progress)
                records.append({"iteration": iteration, **results})
                atomic_write(out_dir / f"val_{iteration:07d}.json",
                             lambda tmp, r=results: Path(tmp).write_text(json.dumps(r, indent=2)))
            barrier()
        if iteration % config.output.checkpoint_period == 0 or iteration == solver.max_iter:
            if rank == 0:
                write_metrics(out_dir / METRICS, records)
                checkpointing.save_checkpoint(checkpoint_path, model=model, optimizer=optimizer,
                                              scheduler=scheduler, scaler=scaler, iteration=iteration,
                                              config=config.to_dict(),
                                              seconds=earlier_seconds + time.perf_counter() - started)
                plot_losses(records, out_dir / "loss_curve.png")
            barrier()
        elif log_now and rank == 0:
            write_metrics(out_dir / METRICS, records)
    bar.close()
    final = out_dir / FINAL_WEIGHTS
    if rank == 0:
        freeze_batch_norms(model.backbone)  # the inference layout: the statistics learned, frozen
        save_weights(model, final)
    barrier()
    return final


def run_from_cli(argv: list[str] | None, stage: int) -> int:
    """Shared command line of training/train.py (stage 1) and training/finetune_outliers.py (stage 2)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description=("Stage 1: mask-transformer training with the official recipe." if stage == 1 else
                     "Stage 2: mask contrastive fine-tuning with AnomalyMix, from a stage-1 model."))
    parser.add_argument("config", help="YAML training config (see training/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last_checkpoint.pt")
    parser.add_argument("--output", help="override output.dir")
    parser.add_argument("--max-iter", type=int, help="override solver.max_iter")
    if stage == 2:
        parser.add_argument("--init", help="stage-1 weights (.safetensors) or training checkpoint (.pt)")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_yaml(args.config)
        if args.output:
            config.output.dir = args.output
        if args.max_iter:
            config.solver.max_iter = args.max_iter
        if stage == 2:
            if args.init:
                key = "checkpoint" if args.init.endswith(".pt") else "weights"
                config.init.weights, config.init.checkpoint = None, None
                setattr(config.init, key, args.init)
            if not (config.init.weights or config.init.checkpoint):
                raise M2AError("stage 2 starts from a stage-1 model: set init.weights / init.checkpoint or --init")
            if config.loss.outlier_weight <= 0:
                raise M2AError("stage 2 needs loss.outlier_weight > 0 (the mask contrastive loss)")
        config.validate(args.config)
        final = train(config, resume=args.resume)
    except M2AError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final weights: {final}")
    return 0


__all__ = ["build_model", "run_from_cli", "train", "validate"]
