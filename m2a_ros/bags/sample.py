"""``m2a_bag_make_sample``: the bundled model's held-out synthetic benchmark as a camera bag with ground truth.

    m2a_bag_make_sample --out data/demo/synth_heldout --frames 90    # the committed sample bag (make demo-bag)
    m2a_bag_make_sample --out /tmp/bag --frames 4 --height 64 --width 128

Frame ``i`` is frame ``i`` of ``write_anomaly_benchmark(count, height, width, seed)`` (the same pixels and
labels, drawn in memory by ``m2a_core.synthetic``), so with the defaults, the held-out plan and seed of the
bundled model (``m2a_core.synthetic.demo_plan``: ``FULL``, ``SEEDS["test"]``), an evaluation of the bag gives
its held-out numbers. Topics, every message of frame ``i`` stamped ``START + i / rate``:

- ``/camera/front/image_raw/compressed``: sensor_msgs/CompressedImage, PNG (lossless; ``--jpeg-quality``
  for JPEG), ``frame_id`` an optical frame, as ``image_transport``'s compressed plugin publishes;
- ``/ground_truth/anomaly``: mono8 Image, 0 inlier / 1 anomaly / 255 void (``m2a_bag_eval --labels-topic``);
- ``/ground_truth/semantic``: mono8 Image, Cityscapes trainIds, 254 unknown (the anomalies), 255 void
  (``m2a_bag_eval --semantic-topic``).

mcap storage with zstd chunks (the label images shrink ~50x; PNG frames do not shrink further). The bag is
written beside ``--out`` and moved there when complete (``BagWriter``); the same arguments give the same bytes.
Size: a 256x512 PNG frame is ~0.21 MB, so the committed bag holds the first 90 of the 200 held-out frames
(19.1 MB; all 200 would be 42 MB).
"""
from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2a_core.errors import M2AError

IMAGE_TOPIC = "/camera/front/image_raw/compressed"
ANOMALY_TOPIC = "/ground_truth/anomaly"
SEMANTIC_TOPIC = "/ground_truth/semantic"
FRAME_ID = "camera_front_optical_frame"
START_NS = 1_767_225_600_000_000_000   # 2026-01-01 00:00:00 UTC: fixed, so the bag is reproducible


@dataclass(frozen=True)
class SamplePlan:
    frames: int
    height: int
    width: int
    seed: int
    rate_hz: float = 10.0
    jpeg_quality: int | None = None    # None: PNG (lossless)

    def stamp_ns(self, index: int) -> int:
        return START_NS + round(index * 1e9 / self.rate_hz)


def held_out_plan() -> dict[str, int]:
    """frames / height / width / seed of the bundled model's held-out benchmark."""
    from m2a_core.synthetic.demo_plan import FULL, SEEDS

    return {"frames": FULL.test, "height": FULL.height, "width": FULL.width, "seed": SEEDS["test"]}


class MessageBuilder:
    """The bag's messages as CDR bytes, serialized by ``rosbags`` (rclpy leaves CDR padding bytes uninitialised,
    which would make the bag differ from run to run)."""

    def __init__(self, typestore) -> None:
        self.store = typestore
        self.types = typestore.types

    def header(self, stamp_ns: int):
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        return self.types["std_msgs/msg/Header"](
            stamp=self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=FRAME_ID)

    def mono8(self, labels: np.ndarray, header) -> bytes:
        labels = np.ascontiguousarray(labels, np.uint8)
        msg = self.types["sensor_msgs/msg/Image"](
            header=header, height=labels.shape[0], width=labels.shape[1], encoding="mono8", is_bigendian=0,
            step=labels.shape[1], data=labels.reshape(-1))
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    def compressed(self, rgb: np.ndarray, header, jpeg_quality: int | None) -> bytes:
        """sensor_msgs/CompressedImage of ``rgb``: PNG (lossless) or JPEG at ``jpeg_quality`` (4:4:4)."""
        from PIL import Image

        buffer = io.BytesIO()
        if jpeg_quality is None:
            Image.fromarray(rgb).save(buffer, format="png", compress_level=9)
            fmt = "rgb8; png compressed rgb8"     # image_transport's compressed format string
        else:
            Image.fromarray(rgb).save(buffer, format="jpeg", quality=jpeg_quality, subsampling=0)
            fmt = "rgb8; jpeg compressed rgb8"
        msg = self.types["sensor_msgs/msg/CompressedImage"](
            header=header, format=fmt, data=np.frombuffer(buffer.getvalue(), np.uint8))
        return bytes(self.store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))


def write_sample_bag(out: str | Path, plan: SamplePlan, progress: bool = True) -> Path:
    """Write the bag (mcap, zstd chunks) to ``out``; returns its path."""
    from tqdm import tqdm

    from m2a_core.synthetic.writer import (
        MAX_ANOMALIES,
        MIN_ANOMALIES,
        anomaly_frame,
        anomaly_labels,
        open_set_labels,
    )
    from m2a_ros.bags.storage import BagWriter

    if plan.frames < 1:
        raise M2AError(f"--frames must be >= 1, got {plan.frames}")
    if plan.height < 32 or plan.width < 32:
        raise M2AError(f"frame size must be at least 32x32 pixels, got {plan.height}x{plan.width}")
    if not plan.rate_hz > 0:
        raise M2AError(f"--rate must be > 0, got {plan.rate_hz}")
    if plan.jpeg_quality is not None and not 1 <= plan.jpeg_quality <= 100:
        raise M2AError(f"--jpeg-quality must be in 1..100, got {plan.jpeg_quality}")
    out = Path(out)
    if out.exists() and not (out / "metadata.yaml").is_file():
        raise M2AError(f"{out} exists and is not a bag: not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = BagWriter(out, "mcap", compress=True)
    build = MessageBuilder(writer.typestore)
    try:
        for index in tqdm(range(plan.frames), desc="sample bag", unit="frame", disable=not progress):
            frame = anomaly_frame(plan.seed, index, plan.height, plan.width, MIN_ANOMALIES, MAX_ANOMALIES)
            stamp = plan.stamp_ns(index)
            header = build.header(stamp)
            writer.write(IMAGE_TOPIC, "sensor_msgs/msg/CompressedImage", stamp,
                         build.compressed(frame.image, header, plan.jpeg_quality))
            writer.write(ANOMALY_TOPIC, "sensor_msgs/msg/Image", stamp, build.mono8(anomaly_labels(frame), header))
            writer.write(SEMANTIC_TOPIC, "sensor_msgs/msg/Image", stamp, build.mono8(open_set_labels(frame), header))
    except BaseException:
        writer.abort()   # a bag already at ``out`` stays as it was
        raise
    return writer.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2a_bag_make_sample",
        description="Write the bundled model's held-out synthetic benchmark as a 10 Hz camera bag with ground truth "
                    "(defaults: the bundled model's held-out plan, m2a_core.synthetic.demo_plan).")
    parser.add_argument("--out", required=True, help="bag folder to write (replaced if it is a bag)")
    parser.add_argument("--frames", type=int, help="number of frames (default: the held-out set's)")
    parser.add_argument("--height", type=int, help="frame height (default: the held-out set's)")
    parser.add_argument("--width", type=int, help="frame width (default: the held-out set's)")
    parser.add_argument("--seed", type=int, help="benchmark seed (default: the held-out set's)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz (stamps 1/rate apart)")
    parser.add_argument("--jpeg-quality", type=int,
                        help="store the camera frames as JPEG of this quality instead of lossless PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        given = {"frames": args.frames, "height": args.height, "width": args.width, "seed": args.seed}
        values = given if None not in given.values() else {**held_out_plan(),
                                                           **{k: v for k, v in given.items() if v is not None}}
        plan = SamplePlan(rate_hz=args.rate, jpeg_quality=args.jpeg_quality, **values)
        path = write_sample_bag(args.out, plan, progress=not args.no_progress)
    except M2AError as exc:
        print(f"m2a_bag_make_sample: error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"wrote {path}: {plan.frames} frames {plan.height}x{plan.width} (seed {plan.seed}) at {plan.rate_hz:g} Hz, "
          f"{size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
