"""m2a_bag_eval over bags this test writes (mcap and sqlite3, Image and CompressedImage, ground truth).

Expected values are computed independently here: the predictor run frame by frame on the frames the
test generated, and ``evaluate_anomaly`` over those in-memory frames; result bags are read back and
compared with them message by message.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from m2a_core.checkpoint import save_weights
from m2a_core.metrics.evaluate import evaluate_anomaly
from m2a_core.predictor import Predictor
from m2a_core.visualize import colorize_scores
from m2a_ros.bags.evaluate import main as bag_eval
from m2a_ros.bags.storage import BagWriter, open_bag
from m2a_ros.conversions import image_to_array

from helpers import TINY, make_model, random_image

# Message definitions rosbags does not ship come from the ROS install's share folders (m2a_ros.bags.storage).
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

HEIGHT, WIDTH = 48, 80
NUM_FRAMES = 6
OPTIONS = ["--set", "short_side=64", "--set", "max_size=128", "--set", "threshold=0.3",
           "--set", "min_instance_area=10"]
IMAGE_OUTPUTS = {"anomaly", "anomaly/color", "labels", "labels/color", "overlay"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bag_model") / "tiny.safetensors"
    save_weights(make_model(TINY, 3), path)
    return path


@pytest.fixture(scope="module")
def predictor(weights) -> Predictor:
    return Predictor.from_weights(weights, short_side=64, max_size=128)


def stamp_ns(index: int) -> int:
    return 1_700_000_000_000_000_000 + index * 100_000_000 + 12345


def frame(index: int) -> np.ndarray:
    rgb = random_image(index, HEIGHT, WIDTH)
    rgb[8 + index:20 + index, 30:50] = (250, 20, 200)  # a patch that moves, so the scores vary
    return rgb


def ground_truth(index: int) -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[8 + index:20 + index, 30:50] = 1
    labels[:2] = 255
    return labels


def set_stamp(msg, stamp: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.header.frame_id = "camera_optical"


def image_msg(array: np.ndarray, encoding: str, stamp: int) -> Image:
    msg = Image()
    set_stamp(msg, stamp)
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.step = int(array.strides[0])
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def compressed_msg(array: np.ndarray, stamp: int) -> CompressedImage:
    msg = CompressedImage()
    set_stamp(msg, stamp)
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")  # lossless: the model sees the same pixels
    msg.format = "png"
    msg.data = buffer.getvalue()
    return msg


def write_bag(path: Path, storage: str, compressed: bool = False, frames: int = NUM_FRAMES,
              labels: bool = True, zstd: bool = False, filler_bytes: int = 0) -> Path:
    """A drive: frames (10 Hz), their labels, and an unrelated topic (``filler_bytes`` of text per frame
    make the bag span several mcap chunks)."""
    rng = np.random.default_rng(0)
    with BagWriter(path, storage, compress=zstd) as writer:
        writer.write("/tf_noise", "std_msgs/msg/String", stamp_ns(0) - 1, serialize_message(String(data="x")))
        for index in range(frames):
            if filler_bytes:
                text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), filler_bytes))
                writer.write("/tf_noise", "std_msgs/msg/String", stamp_ns(index), serialize_message(String(data=text)))
            log_time = stamp_ns(index) + 3_000_000  # recorded 3 ms after capture
            if compressed:
                writer.write("/camera/image/compressed", "sensor_msgs/msg/CompressedImage", log_time,
                             serialize_message(compressed_msg(frame(index), stamp_ns(index))))
            else:
                writer.write("/camera/image", "sensor_msgs/msg/Image", log_time,
                             serialize_message(image_msg(frame(index), "rgb8", stamp_ns(index))))
            if labels:
                writer.write("/ground_truth", "sensor_msgs/msg/Image", log_time + 1,
                             serialize_message(image_msg(ground_truth(index), "mono8", stamp_ns(index))))
    return path


def expected_metrics(predictor: Predictor, indices: list[int]) -> dict:
    """The metrics of running the predictor frame by frame on the generated frames."""
    predictions = {i: predictor(frame(i)).anomaly.astype(np.float32) for i in indices}

    def source():
        return ((str(i), predictions[i], ground_truth(i)) for i in indices)

    results, _ = evaluate_anomaly(source)
    return results


def assert_metrics_equal(path: Path, expected: dict) -> None:
    written = json.loads(path.read_text())
    for key in ("AuPRC", "FPR95", "FPR95_interp", "AUROC", "smiyc_AuPRC", "smiyc_FPR95", "sIoU", "PPV",
                "mean_F1", "num_frames"):
        if expected[key] != expected[key]:  # NaN is written as null
            assert written[key] is None, key
        else:
            assert written[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key


def read_topics(path: Path) -> dict[str, list]:
    bag = open_bag(path)
    assert not bag.scanned, bag.open_problem
    messages: dict[str, list] = {}
    for message in bag.messages(bag.topics):
        messages.setdefault(message.topic, []).append(message)
    return messages


@pytest.mark.parametrize("storage,compressed", [("mcap", False), ("sqlite3", True)])
def test_offline_eval_equals_frame_by_frame(tmp_path, weights, predictor, storage, compressed):
    bag = write_bag(tmp_path / "drive", storage, compressed)
    topic = "/camera/image/compressed" if compressed else "/camera/image"
    out = tmp_path / "out"
    status = bag_eval(["--bag", str(bag), "--image-topic", topic, "--labels-topic", "/ground_truth",
                       "--weights", str(weights), "--out", str(out), *OPTIONS])
    assert status == 0
    assert_metrics_equal(out / "metrics.json", expected_metrics(predictor, list(range(NUM_FRAMES))))
    report = json.loads((out / "report.json").read_text())
    assert report["frames_read"] == report["frames_processed"] == NUM_FRAMES
    assert report["read_problem"] is None and report["frames_failed"] == {}
    assert report["ground_truth"]["matched_frames"] == NUM_FRAMES
    assert report["ground_truth"]["frames_without_label"] == report["ground_truth"]["labels_without_frame"] == 0
    for name in ("report.md", "latency.csv", "latency.png", "worst_frames.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert len((out / "latency.csv").read_text().splitlines()) == NUM_FRAMES + 1

    # The result bag: input frames copied byte for byte, every output at the input's log time and stamp.
    topics = read_topics(out / "result_bag")
    source = open_bag(bag)
    inputs = [m for m in source.messages([topic])]
    assert [(m.log_time, m.data) for m in topics[topic]] == [(m.log_time, m.data) for m in inputs]
    assert {f"/m2a_anomaly/{t}" for t in IMAGE_OUTPUTS} | {"/m2a_anomaly/unknown_instances",
                                                          "/m2a_anomaly/class_info", topic} == set(topics)
    class_info = json.loads(deserialize_message(topics["/m2a_anomaly/class_info"][0].data, String).data)
    assert class_info["class_set"] == predictor.class_set.name
    for output in IMAGE_OUTPUTS | {"unknown_instances"}:
        assert [m.log_time for m in topics[f"/m2a_anomaly/{output}"]] == [m.log_time for m in inputs], output
    for index in range(NUM_FRAMES):
        anomaly = deserialize_message(topics["/m2a_anomaly/anomaly"][index].data, Image)
        assert (anomaly.header.stamp.sec * 1_000_000_000 + anomaly.header.stamp.nanosec) == stamp_ns(index)
        assert anomaly.header.frame_id == "camera_optical"
        scores = predictor(frame(index)).anomaly.astype(np.float32)
        np.testing.assert_array_equal(image_to_array(anomaly), scores)
        color = deserialize_message(topics["/m2a_anomaly/anomaly/color"][index].data, Image)
        np.testing.assert_array_equal(image_to_array(color), colorize_scores(scores, 0.0, 1.0, "inferno"))


def test_labels_dir_matching_with_tolerance(tmp_path, weights, predictor):
    bag = write_bag(tmp_path / "drive", "mcap", labels=False)
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    # Frames 0-3: labels 2 ms off their frame (inside the 5 ms tolerance); frame 4: 20 ms off (no match);
    # frame 5: no label; one label far from every frame.
    for index, offset in ((0, 2_000_000), (1, -2_000_000), (2, 0), (3, 1_999_999), (4, 20_000_000)):
        PILImage.fromarray(ground_truth(index)).save(labels_dir / f"{stamp_ns(index) + offset}.png")
    PILImage.fromarray(ground_truth(0)).save(labels_dir / f"{stamp_ns(40)}.png")
    out = tmp_path / "out"
    assert bag_eval(["--bag", str(bag), "--image-topic", "/camera/image", "--labels-dir", str(labels_dir),
                     "--weights", str(weights), "--out", str(out), *OPTIONS]) == 0
    truth = json.loads((out / "report.json").read_text())["ground_truth"]
    assert truth["labels"] == 6 and truth["matched_frames"] == 4
    assert truth["frames_without_label"] == 2 and truth["labels_without_frame"] == 2
    assert sorted(truth["frames_without_label_stamps"]) == [stamp_ns(4), stamp_ns(5)]
    assert_metrics_equal(out / "metrics.json", expected_metrics(predictor, [0, 1, 2, 3]))


@pytest.mark.parametrize("zstd", [False, True])
def test_truncated_mcap_keeps_the_frames_before_the_damage(tmp_path, weights, predictor, zstd):
    # Uncompressed: one chunk, cut inside; its whole messages are read. zstd (ros2 bag record's default):
    # three chunks, the last cut; the complete chunks are read.
    bag = write_bag(tmp_path / "drive", "mcap", frames=10, zstd=zstd, filler_bytes=250_000 if zstd else 0)
    mcap = next(bag.glob("*.mcap"))
    size = mcap.stat().st_size
    with open(mcap, "r+b") as handle:
        handle.truncate(size * 75 // 100 if zstd else size * 6 // 10)  # killed mid-write: no summary, footer
    out = tmp_path / "out"
    assert bag_eval(["--bag", str(bag), "--image-topic", "/camera/image", "--labels-topic", "/ground_truth",
                     "--weights", str(weights), "--out", str(out), *OPTIONS]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["read_by_scanning"] and report["read_problem"] is not None
    read = report["frames_read"]
    assert 0 < read < 10 and report["frames_processed"] == read
    assert "byte" in report["read_problem"]["position"] and "truncated" in report["read_problem"]["reason"]
    assert "Damaged bag" in (out / "report.md").read_text()
    # Frames are stored in order, so the readable ones are the first ones; the last one's label (written
    # just after it) may lie beyond the damage: that frame is reported without a label.
    unlabelled = report["ground_truth"]["frames_without_label_stamps"]
    assert unlabelled in ([], [stamp_ns(read - 1)])
    labelled = [i for i in range(read) if stamp_ns(i) not in unlabelled]
    assert_metrics_equal(out / "metrics.json", expected_metrics(predictor, labelled))
    assert len(read_topics(out / "result_bag")["/camera/image"]) == read


def test_bag_without_metadata_is_read_by_scanning(tmp_path, weights, predictor):
    bag = write_bag(tmp_path / "drive", "sqlite3")
    (bag / "metadata.yaml").unlink()  # ros2 bag record killed before it wrote the metadata
    out = tmp_path / "out"
    assert bag_eval(["--bag", str(bag), "--image-topic", "/camera/image", "--labels-topic", "/ground_truth",
                     "--weights", str(weights), "--out", str(out), *OPTIONS]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["read_by_scanning"] and report["read_problem"] is None
    assert report["frames_processed"] == NUM_FRAMES
    assert_metrics_equal(out / "metrics.json", expected_metrics(predictor, list(range(NUM_FRAMES))))


def test_bad_frames_are_counted_and_the_run_goes_on(tmp_path, weights):
    bag = tmp_path / "drive"
    with BagWriter(bag, "mcap") as writer:
        for index in range(3):
            msg = image_msg(frame(index), "rgb8", stamp_ns(index))
            if index == 1:
                msg.encoding = "yuv422_weird"
            writer.write("/camera/image", "sensor_msgs/msg/Image", stamp_ns(index), serialize_message(msg))
        writer.write("/camera/image", "sensor_msgs/msg/Image", stamp_ns(3), b"\x00\x01\x00\x00garbage")
    out = tmp_path / "out"
    assert bag_eval(["--bag", str(bag), "--image-topic", "/camera/image", "--weights", str(weights),
                     "--out", str(out), *OPTIONS]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames_read"] == 4 and report["frames_processed"] == 2
    assert report["frames_failed"] == {"encoding": 1, "deserialize": 1}
    assert "yuv422_weird" in report["failure_examples"]["encoding"]
    assert "metrics" not in report  # no ground truth given
    assert (out / "worst_frames.png").is_file()  # the slowest frames without ground truth


def test_user_errors_are_one_line(tmp_path, weights, capsys):
    bag = write_bag(tmp_path / "drive", "mcap", frames=1)
    common = ["--weights", str(weights), "--out", str(tmp_path / "out"), *OPTIONS]
    assert bag_eval(["--bag", str(tmp_path / "missing"), "--image-topic", "/camera/image", *common]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert bag_eval(["--bag", str(bag), "--image-topic", "/front/image", *common]) == 2
    error = capsys.readouterr().err
    assert "/front/image" in error and "/camera/image (sensor_msgs/msg/Image)" in error
    assert bag_eval(["--bag", str(bag), "--image-topic", "/tf_noise", *common]) == 2
    assert "expected sensor_msgs Image" in capsys.readouterr().err
    assert bag_eval(["--bag", str(bag), "--image-topic", "/camera/image", "--set", "overlay_alpha=high", *common]) == 2
    assert "overlay_alpha must be a float" in capsys.readouterr().err
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "garbage.db3").write_bytes(b"this is not sqlite" * 100)
    assert bag_eval(["--bag", str(garbage), "--image-topic", "/camera/image", *common]) == 2
    assert "garbage.db3" in capsys.readouterr().err
    labels = tmp_path / "labels"
    labels.mkdir()
    PILImage.fromarray(ground_truth(0)).save(labels / "frame_0001.png")
    assert bag_eval(["--bag", str(bag), "--image-topic", "/camera/image", "--labels-dir", str(labels), *common]) == 2
    assert "stamp in nanoseconds" in capsys.readouterr().err
