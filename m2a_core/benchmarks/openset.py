"""``m2a bench openset``: time of the open-set post-processing on one frame, next to the network's.

Synthetic network outputs of the given size (random smooth masks, ``--known`` of the queries with a known best
class, a share of them confident) go through: the anomaly post-processing the predictor always runs
(``anomaly_maps``), open-set semantic labels, and open-set panoptic at full and at mask resolution.
``--with-network`` also times one forward pass of the official-size model (random weights) to print each
step as a share of the network time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from m2a_core.classes import get_class_set


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("openset", help="open-set semantic and panoptic post-processing time")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--known", type=int, default=30, help="queries whose best class is a known class")
    parser.add_argument("--classes", default="cityscapes", help="class set (default cityscapes)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (after one warm-up run)")
    parser.add_argument("--with-network", action="store_true",
                        help="also time the official-size network forward pass (random weights)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.set_defaults(func=run)


def synthetic_outputs(num_queries: int, num_known: int, num_classes: int, padded: tuple[int, int],
                      device: torch.device, seed: int = 0,
                      thing_ids: frozenset[int] = frozenset()) -> tuple[torch.Tensor, torch.Tensor]:
    """pred_logits [Q, K+1] and mask logits [Q, Hp/4, Wp/4] shaped like a trained model's: the known queries
    tile the image into cells, 60 % of them confident (segments), the others not (background where
    unknown instances are mined); the remaining queries predict no object with scattered weak masks."""
    generator = torch.Generator().manual_seed(seed)
    height, width = padded[0] // 4, padded[1] // 4
    logits = torch.randn(num_queries, num_classes + 1, generator=generator)
    logits[:, -1] += 6.0
    known = torch.randperm(num_queries, generator=generator)[:num_known]
    classes = torch.randint(0, num_classes, (num_known,), generator=generator)
    logits[known, -1] -= 12.0
    confident = torch.rand(num_known, generator=generator) < 0.6
    logits[known, classes] += torch.where(confident, 12.0, 2.0)
    things = sorted(thing_ids)
    if things:   # the unsure ones spread mass over thing classes, as unknown objects do
        unsure = known[~confident]
        logits[unsure[:, None], torch.tensor(things)[None]] += 1.5
    fields = torch.randn(num_queries, 1, 6, 12, generator=generator)
    fields = F.interpolate(fields, size=(height, width), mode="bicubic", align_corners=False)[:, 0]
    # Known queries tile the image as Voronoi cells (connected, like real segments).
    seeds = torch.rand(num_known, 2, generator=generator) * torch.tensor([height, width])
    grid = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), -1).float()
    owner = torch.cdist(grid.view(-1, 2), seeds).argmin(1).view(height, width)
    masks = torch.full((num_queries, height, width), -6.0)
    masks[known] = torch.where(owner[None] == torch.arange(num_known)[:, None, None], 6.0, -6.0)
    others = torch.ones(num_queries, dtype=torch.bool)
    others[known] = False
    masks[others] = fields[others] * 4.0 - 4.0
    return logits.to(device), masks.to(device)


def _time(fn, sync, repeat: int) -> list[float]:
    times = []
    for index in range(repeat + 1):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if index:
            times.append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace) -> int:
    from m2a_core.inference import anomaly_maps
    from m2a_core.openset.panoptic import PanopticParams, panoptic_from_outputs
    from m2a_core.openset.semantic import openset_semantic

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    class_set = get_class_set(args.classes)
    size = (args.height, args.width)
    padded = (-(-args.height // 32) * 32, -(-args.width // 32) * 32)
    logits, masks = synthetic_outputs(args.queries, min(args.known, args.queries), class_set.num_classes, padded,
                                      device, thing_ids=class_set.thing_ids)
    params = PanopticParams()
    results: dict[str, list[float]] = {}
    with torch.inference_mode():
        maps = anomaly_maps(logits, masks, padded, size, size)
        threshold = float(maps.anomaly.float().quantile(0.9)) if maps.anomaly.numel() <= 2**24 else 0.5
        results["anomaly_maps (always run)"] = _time(lambda: anomaly_maps(logits, masks, padded, size, size), sync,
                                                     args.repeat)
        results["openset semantic"] = _time(
            lambda: openset_semantic(maps.semseg, maps.anomaly, threshold, num_classes=class_set.num_classes), sync,
            args.repeat)
        for resolution in ("full", "mask"):
            results[f"openset panoptic ({resolution})"] = _time(
                lambda r=resolution: panoptic_from_outputs(logits, masks, padded, size, size, class_set, params, r),
                sync, args.repeat)
        sample = panoptic_from_outputs(logits, masks, padded, size, size, class_set, params, "full")
        if args.with_network:
            from m2a_core.config import ModelConfig
            from m2a_core.modeling import Mask2Anomaly

            model = Mask2Anomaly(ModelConfig(num_classes=class_set.num_classes)).to(device).eval()
            batch = torch.randn(1, 3, *padded, device=device)
            results["network forward (R50)"] = _time(lambda: model(batch, aux=False), sync, args.repeat)
    network = statistics.median(results["network forward (R50)"]) if args.with_network else None
    print(f"m2a bench openset: {size[0]}x{size[1]}, device {device}, threads {torch.get_num_threads()}, "
          f"{args.queries} queries ({args.known} known), {args.repeat} runs; sample frame: "
          f"{len(sample.segments)} segments, {len(sample.unknown_segments())} unknown")
    header = f"{'step':<30}{'median ms':>12}{'min ms':>10}{'max ms':>10}"
    print(header + (f"{'of network':>12}" if network else ""))
    for step, values in results.items():
        line = (f"{step:<30}{statistics.median(values) * 1e3:>12.1f}{min(values) * 1e3:>10.1f}"
                f"{max(values) * 1e3:>10.1f}")
        if network:
            line += f"{statistics.median(values) / network:>11.1%}"
        print(line)
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    return 0
