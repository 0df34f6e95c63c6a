"""``m2a_bag_eval``: the node over every camera frame of a bag, a result bag, and an evaluation report.

    m2a_bag_eval --bag IN --image-topic /camera/image [--labels-topic /gt | --labels-dir DIR] \
                 --weights W [--params-file config/anomaly.yaml] [--set threshold=0.6 ...] --out DIR

Every Image/CompressedImage of ``--image-topic`` goes through the node's own conversion, predictor and
output building (``m2a_ros.bags.pipeline``). Written to ``--out``:

- ``result_bag/``: the input frames and every node output topic (``/<node>/anomaly``, ``.../overlay``, ...)
  at the input's log times with the input's headers, plus ``/<node>/class_info``: open it in RViz
  (``ros2 bag play``) or Foxglove;
- with ground truth: ``metrics.json`` and ``curves.png`` from ``m2a_core.metrics.evaluate`` (the same
  metrics as ``m2a eval``); ground truth is matched to frames by header stamp within ``--match-tolerance``
  and unmatched frames and labels are counted in the report. Labels are 0 inlier / 1 anomaly / 255 void:
  a ``mono8`` Image topic, or PNGs named ``<stamp in ns>.png``;
- with ``--semantic-topic`` (mono8 trainIds, 254 unknown, 255 void): open-mIoU of the node's open-set label
  image and closed-set mIoU of its class map on the known pixels (``m2a_ros.bags.products.OpenSetScores``);
- ``contact_sheet.png``: ``--sheet`` frames spread over the bag (camera image, ground truth, the node's heatmap,
  open-set labels and overlay with unknown instances); with ``--pictures`` also every frame's
  ``pictures/<stamp>_{heatmap,labels,overlay}.png`` (the node's published images);
- ``report.md`` / ``report.json``: a summary table (AuPRC, FPR95, sIoU, PPV, mean F1, open-mIoU, closed mIoU,
  unknown IoU), the metrics table, frame counts, failures, matching, latency summary and the
  bag's state (a damaged bag is read up to the damage; the report says where reading stopped);
- ``latency.csv`` (per frame) and ``latency.png``; ``worst_frames.png``: the frames with the lowest AuPRC
  (the slowest without ground truth) as a contact sheet.

``--live`` plays the bag into a running node instead and evaluates what it publishes, with the frames it
skipped and the end-to-end latency (``m2a_ros.bags.live``).

Memory stays bounded on long bags: frames stream through; only frames with ground truth are kept, on
disk (``frames/<stamp>.npy`` scores and ``.png`` labels, the layout ``m2a eval scores`` reads).
"""
from __future__ import annotations

import argparse
import bisect
import csv
import heapq
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2a_core.cli.eval import (
    add_metric_arguments,
    atomic_write_text,
    read_binary_labels,
    score_folder_source,
    write_results,
    write_score_map,
)
from m2a_core.errors import DatasetError, M2AError
from m2a_core.metrics.evaluate import evaluate_anomaly, json_ready

LABEL_VALUES = (0, 1, 255)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2a_bag_eval", description="Run the m2a_anomaly node's processing over a bag: result bag, metrics, "
                                         "latency and worst frames.")
    parser.add_argument("--bag", required=True, help="input rosbag2 folder (mcap or sqlite3) or .mcap/.db3 file")
    parser.add_argument("--image-topic", required=True, help="camera topic (sensor_msgs Image or CompressedImage)")
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--labels-topic", help="ground-truth topic in the bag: mono8 Image, 0 / 1 anomaly / 255 void")
    truth.add_argument("--labels-dir", help="ground-truth folder: <header stamp in ns>.png, 0 / 1 / 255")
    parser.add_argument("--semantic-topic",
                        help="semantic ground-truth topic: mono8 Image of class ids, 254 unknown (anomaly), 255 void; "
                             "adds open-mIoU (the node's open-set labels) and closed mIoU (offline only)")
    parser.add_argument("--pictures", action="store_true",
                        help="write every frame's heatmap, open-set labels and overlay PNGs to OUT/pictures")
    parser.add_argument("--sheet", type=int, default=None,
                        help="frames in contact_sheet.png, spread over the bag (0: none; default 6 when the node "
                             "publishes anomaly_color, labels_color and overlay)")
    parser.add_argument("--weights", help="model weights (overrides the parameter file's 'weights')")
    parser.add_argument("--params-file", help="the node's parameter YAML (e.g. config/anomaly.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a node parameter (YAML value), e.g. --set threshold=0.6; repeatable")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--node-name", default="m2a_anomaly", help="node name the output topics go under")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="result bag storage")
    parser.add_argument("--compress", action="store_true", help="zstd-compressed result bag (mcap only)")
    parser.add_argument("--match-tolerance", type=float, default=0.005,
                        help="seconds between a frame's and its label's header stamps to pair them")
    parser.add_argument("--worst", type=int, default=6, help="frames in the worst-frames contact sheet")
    live = parser.add_argument_group("live replay (--live): play the bag into a running node, evaluate what it "
                                     "publishes")
    live.add_argument("--live", action="store_true",
                      help="publish the frames to the running node (--node-name) instead of running the model here")
    live.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    live.add_argument("--publish-topic", help="topic the node subscribes to (default: --image-topic)")
    live.add_argument("--discovery-timeout", type=float, default=30.0,
                      help="seconds for the node's subscription and outputs to appear")
    live.add_argument("--drain-timeout", type=float, default=5.0,
                      help="seconds to wait for outputs after the last frame")
    add_metric_arguments(parser)
    return parser


def parse_overrides(items: list[str]) -> dict[str, object]:
    import yaml

    overrides = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise M2AError(f"--set takes NAME=VALUE, got {item!r}")
        overrides[name.strip()] = yaml.safe_load(text)
    return overrides


# Ground truth -----------------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """Label stamps (ns, sorted) -> label PNG; frames pick the nearest within the tolerance."""

    stamps: list[int]
    paths: dict[int, Path]
    tolerance_ns: int
    used: set[int] = field(default_factory=set)

    def match(self, stamp: int) -> int | None:
        index = bisect.bisect_left(self.stamps, stamp)
        candidates = [self.stamps[i] for i in (index - 1, index) if 0 <= i < len(self.stamps)]
        if not candidates:
            return None
        best = min(candidates, key=lambda s: abs(s - stamp))
        return best if abs(best - stamp) <= self.tolerance_ns else None


def labels_from_dir(folder: Path, tolerance_ns: int) -> GroundTruth:
    if not folder.is_dir():
        raise DatasetError(f"--labels-dir {folder} does not exist")
    paths = {}
    for path in sorted(folder.glob("*.png")):
        if not path.stem.isdigit():
            raise DatasetError(f"label {path} is not named <header stamp in nanoseconds>.png")
        paths[int(path.stem)] = path
    if not paths:
        raise DatasetError(f"no <stamp>.png labels in {folder}")
    return GroundTruth(sorted(paths), paths, tolerance_ns)


def labels_from_topic(bag, topic: str, folder: Path, tolerance_ns: int,
                      values: tuple[int, ...] | None = LABEL_VALUES) -> tuple[GroundTruth, str | None]:
    """Spool the label topic to PNGs first (one pass over that topic only): frames then find their label
    wherever it lies in the bag, and memory holds only stamps. ``values``: the only values allowed (None: any,
    checked by the user of the labels)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from m2a_core.imageio import write_png
    from m2a_ros.bags.pipeline import header_stamp_ns
    from m2a_ros.bags.storage import BagTruncated
    from m2a_ros.conversions import ImageConversionError, image_to_array

    if bag.topics.get(topic) not in (None, "sensor_msgs/msg/Image"):
        raise DatasetError(f"labels topic {topic} has type {bag.topics[topic]}; expected a mono8 sensor_msgs/Image")
    folder.mkdir(parents=True, exist_ok=True)
    paths, problem = {}, None
    try:
        for message in bag.messages([topic]):
            msg = deserialize_message(message.data, Image)
            if msg.encoding != "mono8":
                raise DatasetError(f"labels topic {topic}: encoding {msg.encoding!r}, expected mono8")
            try:
                labels = image_to_array(msg)
            except ImageConversionError as exc:
                raise DatasetError(f"labels topic {topic}: {exc}") from None
            unexpected = np.setdiff1d(np.unique(labels), values) if values is not None else ()
            if len(unexpected):
                raise DatasetError(f"labels topic {topic} has values {unexpected[:8].tolist()}; expected "
                                   + ", ".join(map(str, values)))
            stamp = header_stamp_ns(msg.header)
            write_png(folder / f"{stamp}.png", labels)
            paths[stamp] = folder / f"{stamp}.png"
    except BagTruncated as exc:
        problem = str(exc)
    if not paths:
        raise DatasetError(f"no readable labels on {topic}" + (f" ({problem})" if problem else ""))
    return GroundTruth(sorted(paths), paths, tolerance_ns), problem


# Per-frame bookkeeping --------------------------------------------------------------------------------


@dataclass(order=True)
class WorstFrame:
    badness: float
    stamp_ns: int
    title: str = field(compare=False)
    panels: list[np.ndarray] = field(compare=False)


def thumbnail(image: np.ndarray, width: int = 320) -> np.ndarray:
    from PIL import Image

    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.NEAREST))


def label_picture(labels: np.ndarray) -> np.ndarray:
    picture = np.zeros((*labels.shape, 3), np.uint8)
    picture[labels == 1] = (255, 255, 255)
    picture[labels == 255] = (90, 90, 90)
    return picture


def frame_auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    from m2a_core.metrics.pixel import PixelScoreAccumulator

    accumulator = PixelScoreAccumulator()
    accumulator.update(scores, labels)
    return float(accumulator.compute()["AuPRC"])


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    array = np.asarray(values) * 1e3
    return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
            "p95": float(np.percentile(array, 95)), "max": float(array.max())}


# Per-frame results -> report ----------------------------------------------------------------------------


class FrameBook:
    """Everything a run keeps per frame, in bounded memory: latency rows (numbers), ground-truth frames on
    disk for the metrics, failure counts, and the ``worst`` frames' thumbnails for the contact sheet."""

    def __init__(self, out: Path, truth: GroundTruth | None, worst: int, settings, min_instance_area: int = 0
                 ) -> None:
        from m2a_core.metrics.panoptic import UnknownInstanceQuality

        self.out, self.truth, self.worst_count, self.settings = out, truth, worst, settings
        self.instance_quality = UnknownInstanceQuality(min_instance_area)
        self.frames_dir = out / "frames"
        if truth is not None:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.frames_dir.glob("*.*"):  # an earlier run's frames must not enter these metrics
                stale.unlink()
        self.failures: dict[str, int] = {}
        self.failure_examples: dict[str, str] = {}
        self.latency_rows: list[dict] = []
        self.worst: list[WorstFrame] = []    # min-heap by badness: the root is the first to leave
        self.matched: list[int] = []
        self.unmatched_frames: list[int] = []

    def fail(self, kind: str, example: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.failure_examples.setdefault(kind, example)

    def add(self, stamp_ns: int, scores: np.ndarray, latency_row: dict, rgb, instances: np.ndarray | None = None,
            unknown_ids: tuple[int, ...] | list[int] = ()) -> None:
        """One processed frame: ``scores`` float32 [H, W]; ``rgb()`` gives its input picture (called only
        for frames that enter the contact sheet); ``instances`` / ``unknown_ids``: the id map of the node's
        segments and which of them are unknown instances, when it computed them."""
        from m2a_core.imageio import write_png

        self.latency_rows.append({"stamp_ns": stamp_ns, **latency_row})
        truth = self.truth
        label_stamp = truth.match(stamp_ns) if truth is not None else None
        badness = panels = None
        if truth is None:
            badness, title, panels = latency_row["total_ms"], f"{stamp_ns}  {latency_row['total_ms']:.0f} ms", []
        elif label_stamp is None:
            self.unmatched_frames.append(stamp_ns)
        else:
            labels = read_binary_labels(truth.paths[label_stamp])
            if labels.shape != scores.shape:
                raise DatasetError(f"label {truth.paths[label_stamp]} is {labels.shape[::-1]} but frame "
                                   f"{stamp_ns} is {scores.shape[::-1]}")
            truth.used.add(label_stamp)
            self.matched.append(stamp_ns)
            write_score_map(self.frames_dir / f"{stamp_ns}.npy", scores)
            write_png(self.frames_dir / f"{stamp_ns}.png", labels)
            if instances is not None:
                self.instance_quality.update(labels, instances, unknown_ids)
            if np.any(labels == 1):
                auprc = frame_auprc(scores, labels)
                badness, title, panels = 1.0 - auprc, f"{stamp_ns}  AuPRC {100 * auprc:.1f}", [labels]
        if badness is None or not self.worst_count:
            return
        if len(self.worst) == self.worst_count and (badness, stamp_ns) <= (self.worst[0].badness,
                                                                          self.worst[0].stamp_ns):
            return
        from m2a_core.visualize import colorize_scores

        s = self.settings
        pictures = [thumbnail(rgb()), thumbnail(colorize_scores(scores, s.score_min, s.score_max, s.colormap))]
        pictures += [thumbnail(label_picture(p)) for p in panels]
        entry = WorstFrame(badness, stamp_ns, title, pictures)
        if len(self.worst) < self.worst_count:
            heapq.heappush(self.worst, entry)
        else:
            heapq.heapreplace(self.worst, entry)

    def finish(self, args, report: dict, label_problem: str | None = None) -> str:
        """Metrics, latency table and plot, contact sheet, report.json and report.md; returns the markdown."""
        truth, out = self.truth, self.out
        report.update(frames_processed=len(self.latency_rows), frames_failed=self.failures,
                      failure_examples=self.failure_examples, latency_ms=latency_summary(self.latency_rows))
        if truth is not None:
            report["ground_truth"] = {
                "labels": len(truth.stamps), "matched_frames": len(self.matched),
                "frames_without_label": len(self.unmatched_frames),
                "labels_without_frame": len(truth.stamps) - len(truth.used), "tolerance_s": args.match_tolerance,
                "frames_without_label_stamps": self.unmatched_frames[:50],
                "labels_without_frame_stamps": [s for s in truth.stamps if s not in truth.used][:50],
                "label_read_problem": label_problem,
            }
        if self.instance_quality.frames:
            report["unknown_instances"] = self.instance_quality.compute()
        metrics_markdown = _evaluate(args, truth, self.matched, self.frames_dir, out, report)
        summary_markdown = _summary_table(report, Path(args.bag).name)
        _write_latency(self.latency_rows, out, report.get("latency_title", "per-frame latency"))
        if self.worst:
            _contact_sheet(sorted(self.worst, reverse=True), out / "worst_frames.png",
                           "lowest AuPRC" if truth is not None else "slowest frames")
        atomic_write_text(out / "report.json", json.dumps(json_ready(report), indent=2, sort_keys=True) + "\n")
        markdown = _report_markdown(report, metrics_markdown, bool(self.worst), summary_markdown)
        atomic_write_text(out / "report.md", markdown)
        return markdown


def latency_summary(rows: list[dict]) -> dict[str, dict]:
    keys = [k for k in (rows[0] if rows else {}) if k.endswith("_ms")]
    return {k[:-3]: percentiles_ms([r[k] / 1e3 for r in rows if r.get(k) is not None]) for k in keys}


def open_inputs(args):
    """(bag, image msgtype, ground truth, label problem) after checking the arguments."""
    from m2a_ros.bags.pipeline import IMAGE_TYPES
    from m2a_ros.bags.storage import open_bag

    if args.match_tolerance < 0 or not math.isfinite(args.match_tolerance):
        raise M2AError(f"--match-tolerance must be a finite number >= 0, got {args.match_tolerance}")
    if args.worst < 0:
        raise M2AError(f"--worst must be >= 0, got {args.worst}")
    bag = open_bag(args.bag)
    if args.image_topic not in bag.topics:
        raise M2AError(f"{args.bag}: no topic {args.image_topic!r}; it has "
                       + ", ".join(f"{t} ({m})" for t, m in sorted(bag.topics.items())))
    image_type = bag.topics[args.image_topic]
    if image_type not in IMAGE_TYPES:
        raise M2AError(f"{args.image_topic} has type {image_type}; expected sensor_msgs Image or CompressedImage")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    tolerance_ns = round(args.match_tolerance * 1e9)
    truth, label_problem = None, None
    if args.labels_topic:
        truth, label_problem = labels_from_topic(bag, args.labels_topic, Path(args.out) / "ground_truth",
                                                 tolerance_ns)
    elif args.labels_dir:
        truth = labels_from_dir(Path(args.labels_dir), tolerance_ns)
    return bag, image_type, truth, label_problem


# The offline run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.live:
        from m2a_ros.bags.live import run_live

        if args.semantic_topic or args.pictures:
            raise M2AError("--semantic-topic and --pictures work offline only (without --live)")

        return run_live(args)
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import String
    from tqdm import tqdm

    from m2a_ros.bags.pipeline import IMAGE_TYPES, FrameFailure, NodePipeline, node_values
    from m2a_ros.bags.products import (
        DEFAULT_SHEET_FRAMES,
        PICTURE_OUTPUTS,
        OpenSetScores,
        ProductPictures,
        require_picture_outputs,
    )
    from m2a_ros.bags.storage import BagTruncated, BagWriter
    from m2a_ros.memory import keep_freed_memory
    from m2a_ros.outputs import CLASS_INFO_TOPIC, OUTPUT_TOPICS, class_info_json, message_class

    keep_freed_memory()  # as the node: per-frame arrays reuse freed pages
    if args.sheet is not None and args.sheet < 0:
        raise M2AError(f"--sheet must be >= 0, got {args.sheet}")
    bag, image_type, truth, label_problem = open_inputs(args)
    out = Path(args.out)
    semantic_truth, semantic_problem = None, None
    if args.semantic_topic:
        semantic_truth, semantic_problem = labels_from_topic(bag, args.semantic_topic, out / "ground_truth_semantic",
                                                             round(args.match_tolerance * 1e9), values=None)
    values = node_values(args.weights, args.params_file, parse_overrides(args.set))
    pipeline = NodePipeline(values)
    book = FrameBook(out, truth, args.worst, pipeline.render_settings(), values["min_instance_area"])
    open_set = None
    if semantic_truth is not None:
        if "labels" not in pipeline.wanted:
            raise M2AError("--semantic-topic scores the node's open-set labels: add 'labels' to the 'publish' "
                           "parameter")
        open_set = OpenSetScores(semantic_truth, pipeline.predictor.class_set)
    sheet_frames = args.sheet
    if sheet_frames is None:  # by default, a contact sheet when the node makes the pictures anyway
        sheet_frames = DEFAULT_SHEET_FRAMES if set(PICTURE_OUTPUTS.values()) <= pipeline.wanted else 0
    if args.pictures or sheet_frames:
        require_picture_outputs(pipeline.wanted)
    pictures = ProductPictures(out, args.pictures, sheet_frames, bag.counts.get(args.image_topic), truth)
    prefix = "/" + args.node_name.strip("/")
    kind, msg_class = IMAGE_TYPES[image_type], message_class(image_type)
    read_problem = None
    frames_read = 0
    writer = BagWriter(out / "result_bag", args.storage, args.compress)
    progress = tqdm(total=bag.counts.get(args.image_topic), desc="frames", unit="frame")
    try:
        for message in bag.messages([args.image_topic]):
            frames_read += 1
            progress.update(1)
            writer.write(message.topic, message.msgtype, message.log_time, message.data)
            if writer.count == 1:
                writer.write(f"{prefix}/{CLASS_INFO_TOPIC.topic}", CLASS_INFO_TOPIC.msgtype, message.log_time,
                             serialize_message(String(data=class_info_json(pipeline.predictor.class_set))))
            try:
                try:
                    msg = deserialize_message(message.data, msg_class)
                except Exception as exc:  # rclpy raises several types for malformed CDR
                    raise FrameFailure("deserialize", f"{type(exc).__name__}: {exc}") from None
                result = pipeline.process(kind, msg)
            except FrameFailure as exc:
                book.fail(exc.kind, f"log time {message.log_time}: {exc}")
                continue
            for name, output in result.messages.items():
                if output is not None:
                    topic = OUTPUT_TOPICS[name]
                    writer.write(f"{prefix}/{topic.topic}", topic.msgtype, message.log_time,
                                 serialize_message(output))
            t = result.timings_s
            row = {"log_time_ns": message.log_time, **{f"{k}_ms": 1e3 * v for k, v in t.items()},
                   "total_ms": 1e3 * (t["convert"] + t["predict"] + t["render"])}
            prediction = result.prediction
            book.add(result.stamp_ns, prediction.anomaly.astype(np.float32), row, lambda r=result: r.rgb,
                     prediction.instances, [s["id"] for s in prediction.segments or () if s["unknown"]])
            if open_set is not None:
                open_set.add(result.stamp_ns, result.prediction.labels, result.prediction.semseg)
            pictures.add(frames_read - 1, result.stamp_ns, result.rgb, result.messages)
    except BagTruncated as exc:
        read_problem = {"position": exc.position, "reason": exc.reason, "frames_read": frames_read}
    except KeyboardInterrupt:
        read_problem = {"position": f"frame {frames_read}", "reason": "interrupted", "frames_read": frames_read}
    finally:
        progress.close()
        result_bag = writer.close()

    sheet = pictures.write_sheet(out / "contact_sheet.png", pipeline.values["threshold"])
    report: dict = {
        "mode": "offline", "bag": str(args.bag), "storage": bag.storage, "image_topic": args.image_topic,
        "read_by_scanning": bag.scanned, "open_problem": bag.open_problem, "read_problem": read_problem,
        "frames_read": frames_read, "result_bag": str(result_bag), "outputs": sorted(pipeline.wanted),
        "node_parameters": {k: v for k, v in values.items() if k != "publish"},
        "latency_title": "per-frame latency (offline: convert + predict + render, no DDS)",
        "openset_threshold": pipeline.values["threshold"],
        "pictures": {"folder": str(pictures.folder) if args.pictures else None, "frames": pictures.written,
                     "contact_sheet": str(sheet) if sheet else None},
    }
    if open_set is not None:
        report["open_set"] = {**open_set.results(), "semantic_topic": args.semantic_topic,
                              "semantic_labels": len(semantic_truth.stamps),
                              "semantic_read_problem": semantic_problem}
    markdown = book.finish(args, report, label_problem)
    print(markdown, end="")
    if read_problem:
        print(f"warning: the bag is damaged; results cover the {frames_read} frames before "
              f"{read_problem['position']} ({read_problem['reason']})", file=sys.stderr)
    return 0


def _evaluate(args, truth, matched: list[int], frames_dir: Path, out: Path, report: dict) -> str:
    if truth is None:
        return ""
    if not matched:
        report["metrics"] = None
        return "No frame matched a label: no metrics (see ground_truth in report.json).\n"
    source = score_folder_source(frames_dir, frames_dir)
    try:
        results, curves = evaluate_anomaly(source, track=args.track, threshold=args.threshold,
                                           skip_without_anomaly=args.skip_without_anomaly)
    except M2AError as exc:
        report["metrics"] = None
        return f"No metrics: {exc}\n"
    results.update(bag=str(args.bag), image_topic=args.image_topic)
    report["metrics"] = {k: results.get(k) for k in ("AuPRC", "FPR95", "FPR95_interp", "AUROC", "smiyc_AuPRC",
                                                     "smiyc_FPR95", "sIoU", "PPV", "mean_F1", "num_frames")}
    return write_results(results, curves, Path(args.bag).name, out / "metrics.json", out / "curves.png")


def _summary_table(report: dict, name: str) -> str:
    """AuPRC, FPR95, sIoU, PPV, mean F1, open-mIoU, closed mIoU, unknown IoU in one row (percent), when the run had
    a semantic ground truth (the anomaly columns n/a without an anomaly ground truth)."""
    from m2a_core.metrics.evaluate import results_table
    from m2a_ros.bags.products import SUMMARY_COLUMNS

    if "open_set" not in report:
        return ""
    row = {**(report.get("metrics") or {}), **report["open_set"], **report.get("unknown_instances", {})}
    markdown, _ = results_table({name: row}, SUMMARY_COLUMNS)
    return markdown


def _write_latency(rows: list[dict], out: Path, title: str) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "latency.csv", buffer.getvalue())

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from m2a_core.plots import _atomic_savefig

    total = np.array([r["total_ms"] for r in rows])
    figure, (series, histogram) = pyplot.subplots(1, 2, figsize=(11, 4))
    try:
        for key in ("convert_ms", "predict_ms", "render_ms"):
            if key in rows[0]:
                series.plot([r[key] for r in rows], label=key[:-3], linewidth=1)
        series.plot(total, label="total", color="black", linewidth=1.2)
        series.set(xlabel="frame", ylabel="ms", title=title)
        series.legend()
        histogram.hist(total, bins=min(50, max(5, len(total) // 2)))
        histogram.axvline(np.percentile(total, 95), color="red", linestyle=":", label="p95")
        histogram.set(xlabel="total ms", ylabel="frames", title="latency distribution")
        histogram.legend()
        figure.tight_layout()
        _atomic_savefig(figure, out / "latency.png")
    finally:
        pyplot.close(figure)


def _contact_sheet(frames: list[WorstFrame], path: Path, what: str) -> None:
    from m2a_core.plots import picture_grid

    columns = max(len(f.panels) for f in frames)
    picture_grid([f.panels for f in frames], path,
                 ["input", "anomaly score", "ground truth (white: anomaly, grey: void)"][:columns],
                 row_labels=[f.title for f in frames], title=f"worst frames: {what}", panel_width=3.6)


def _report_markdown(report: dict, metrics_markdown: str, has_sheet: bool, summary_markdown: str = "") -> str:
    lines = [f"# Bag evaluation: {report['bag']} ({report['image_topic']})", ""]
    if summary_markdown:
        lines += ["## Summary (percent)", "", summary_markdown.rstrip(), "",
                  f"open-mIoU: the node's open-set labels (unknown where the anomaly score >= "
                  f"{report['openset_threshold']:.4f}); closed mIoU: its class map on the known pixels; sIoU, PPV, "
                  "mean F1: component metrics (see below); unknown PQ: the node's unknown instances against the "
                  "anomaly components (see below).", ""]
    if report["read_problem"]:
        problem = report["read_problem"]
        lines += [f"**Damaged bag**: reading stopped at {problem['position']} ({problem['reason']}); the results "
                  f"below cover the {problem['frames_read']} frames read before it.", ""]
    elif report["read_by_scanning"]:
        lines += [f"Bag read by scanning (indexed reader failed: {report['open_problem']}).", ""]
    failed = sum(report["frames_failed"].values())
    lines += [f"- frames read: {report['frames_read']}, processed: {report['frames_processed']}, failed: {failed}"
              + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(report['frames_failed'].items()))})" if failed else "")]
    truth = report.get("ground_truth")
    if truth:
        lines += [f"- ground truth: {truth['labels']} labels, {truth['matched_frames']} frames matched within "
                  f"{truth['tolerance_s']} s, {truth['frames_without_label']} frames without a label, "
                  f"{truth['labels_without_frame']} labels without a frame"]
    live = report.get("live")
    if live:
        lines += [f"- live replay into {live['node']} at rate {live['rate']}: {live['published']} frames published, "
                  f"{live['received']} outputs received, {live['skipped']} frames skipped by the node"]
    total = report["latency_ms"].get("total")
    if total and total["p50"] is not None:
        lines += [f"- {report['latency_title']}, ms: p50 {total['p50']:.1f}, p95 {total['p95']:.1f}, "
                  f"max {total['max']:.1f} (latency.csv, latency.png)"]
    lines += [f"- result bag: {report['result_bag']} (outputs: {', '.join(report['outputs'])})"]
    if has_sheet:
        lines += ["- worst frames: worst_frames.png"]
    open_set = report.get("open_set")
    if open_set:
        lines += [f"- semantic ground truth ({open_set['semantic_topic']}): {open_set['semantic_labels']} labels, "
                  f"{open_set['semantic_frames']} frames matched, {open_set['semantic_frames_without_label']} "
                  "frames without one"]
    instances = report.get("unknown_instances")
    if instances:
        lines += [f"- unknown instances: {instances['unknown_instances']} over {instances['instance_frames']} frames; "
                  f"against the ground truth's anomaly components of >= {instances['instance_min_area']} px "
                  f"(IoU > 0.5): {instances['unknown_TP']} matched, {instances['unknown_FP']} false, "
                  f"{instances['unknown_FN']} missed; PQ {100 * instances['unknown_PQ']:.2f}, "
                  f"SQ {100 * instances['unknown_SQ']:.2f}, RQ {100 * instances['unknown_RQ']:.2f}"]
    pictures = report.get("pictures") or {}
    if pictures.get("contact_sheet"):
        lines += [f"- contact sheet: {pictures['contact_sheet']}"]
    if pictures.get("folder"):
        lines += [f"- pictures of {pictures['frames']} frames (heatmap, open-set labels, overlay): "
                  f"{pictures['folder']}"]
    if metrics_markdown:
        lines += ["", "## Metrics (percent)", "", metrics_markdown.rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Console script ``m2a_bag_eval``: user errors are one line and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except M2AError as exc:
        print(f"m2a_bag_eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
