"""The sample bag generator (``m2a_bag_make_sample``) and m2a_bag_eval's open-set scores and pictures.

Expectations are independent of the code under test: the bag is read back with ``rosbags``' own reader and
rclpy, and compared with the PNG files ``write_anomaly_benchmark`` writes for the same seed; the open-set
scores are recomputed here from the predictor run frame by frame on those PNG frames (``OpenSetIoU`` for
open-mIoU, a brute-force per-class IoU for the closed set), and the pictures with ``m2a_core.visualize``.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

from PIL import Image as PILImage  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from m2a_core.checkpoint import save_weights  # noqa: E402
from m2a_core.classes import UNKNOWN_ID  # noqa: E402
from m2a_core.metrics.openset import OpenSetIoU  # noqa: E402
from m2a_core.metrics.panoptic import UnknownInstanceQuality  # noqa: E402
from m2a_core.openset import PanopticParams  # noqa: E402
from m2a_core.predictor import Predictor  # noqa: E402
from m2a_core.synthetic.writer import write_anomaly_benchmark  # noqa: E402
from m2a_core.visualize import colorize_labels, colorize_scores  # noqa: E402
from m2a_ros.bags.evaluate import main as bag_eval  # noqa: E402
from m2a_ros.bags.sample import (  # noqa: E402
    ANOMALY_TOPIC,
    FRAME_ID,
    IMAGE_TOPIC,
    SEMANTIC_TOPIC,
    START_NS,
    SamplePlan,
    write_sample_bag,
)
from m2a_ros.bags.sample import main as make_sample  # noqa: E402
from m2a_ros.bags.storage import BagWriter, open_bag  # noqa: E402

from helpers import TINY, make_model  # noqa: E402

FRAMES, HEIGHT, WIDTH, SEED = 3, 64, 128, 5
THRESHOLD = 0.3
OPTIONS = ["--set", "short_side=64", "--set", "max_size=128", "--set", f"threshold={THRESHOLD}",
           "--set", "min_instance_area=10"]


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    """The same frames as the bag, as ``write_anomaly_benchmark`` writes them (PNG files)."""
    root = tmp_path_factory.mktemp("benchmark")
    write_anomaly_benchmark(root, FRAMES, HEIGHT, WIDTH, SEED, progress=False)
    return root


@pytest.fixture(scope="module")
def sample_bag(tmp_path_factory) -> Path:
    return write_sample_bag(tmp_path_factory.mktemp("bags") / "sample", SamplePlan(FRAMES, HEIGHT, WIDTH, SEED),
                            progress=False)


def png(path: Path) -> np.ndarray:
    return np.asarray(PILImage.open(path))


def stamp(index: int) -> int:
    return START_NS + index * 100_000_000   # 10 Hz


def test_sample_bag_holds_the_benchmark_frames_at_10_hz(sample_bag, benchmark):
    with Reader(sample_bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages = [(c.topic, log_time, bytes(data)) for c, log_time, data in reader.messages()]
    assert types == {IMAGE_TOPIC: "sensor_msgs/msg/CompressedImage", ANOMALY_TOPIC: "sensor_msgs/msg/Image",
                     SEMANTIC_TOPIC: "sensor_msgs/msg/Image"}
    assert len(messages) == 3 * FRAMES
    by_topic: dict[str, list] = {}
    for topic, log_time, data in messages:
        by_topic.setdefault(topic, []).append((log_time, data))
    for topic, folder in ((IMAGE_TOPIC, "images"), (ANOMALY_TOPIC, "labels_masks"),
                          (SEMANTIC_TOPIC, "labels_semantic")):
        assert [t for t, _ in by_topic[topic]] == [stamp(i) for i in range(FRAMES)], topic
        for index, (_, data) in enumerate(by_topic[topic]):
            expected = png(benchmark / folder / f"synth_{index:06d}.png")
            if topic == IMAGE_TOPIC:
                msg = deserialize_message(data, CompressedImage)
                assert "png" in msg.format
                picture = np.asarray(PILImage.open(io.BytesIO(bytes(msg.data))))
            else:
                msg = deserialize_message(data, Image)
                assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", HEIGHT, WIDTH, WIDTH)
                picture = np.frombuffer(bytes(msg.data), np.uint8).reshape(HEIGHT, WIDTH)
            assert (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec) == stamp(index)
            assert msg.header.frame_id == FRAME_ID
            np.testing.assert_array_equal(picture, expected, err_msg=f"{topic} frame {index}")
    labels = png(benchmark / "labels_semantic" / "synth_000000.png")
    assert (labels == UNKNOWN_ID).any() and (labels < 19).any()  # known classes and anomalies both present


def test_sample_bag_is_reproducible_and_replaced_whole(tmp_path, capsys):
    bag = tmp_path / "bag"
    arguments = ["--out", str(bag), "--frames", "2", "--height", "48", "--width", "64", "--seed", "1", "--no-progress"]
    assert make_sample(arguments) == 0
    first = {p.name: p.read_bytes() for p in bag.iterdir()}
    assert make_sample(arguments) == 0   # over the existing bag
    assert {p.name: p.read_bytes() for p in bag.iterdir()} == first
    assert sorted(first) == ["bag.mcap", "metadata.yaml"]
    assert not list(tmp_path.glob(".*partial*"))
    capsys.readouterr()
    assert make_sample([*arguments[:-1], "--jpeg-quality", "0"]) == 2
    assert "--jpeg-quality must be in 1..100" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in bag.iterdir()} == first   # a failed run leaves the bag alone
    # Without --seed, the held-out seed of the demo recipe.
    from training.make_demo_model import SEEDS

    size = ["--frames", "1", "--height", "48", "--width", "64", "--no-progress"]
    assert make_sample(["--out", str(tmp_path / "default" / "bag"), *size]) == 0
    assert make_sample(["--out", str(tmp_path / "explicit" / "bag"), *size, "--seed", str(SEEDS["test"])]) == 0
    assert ((tmp_path / "default" / "bag" / "bag.mcap").read_bytes()
            == (tmp_path / "explicit" / "bag" / "bag.mcap").read_bytes())
    not_a_bag = tmp_path / "notes"
    not_a_bag.mkdir()
    assert make_sample(["--out", str(not_a_bag), *arguments[2:]]) == 2
    assert "not a bag" in capsys.readouterr().err


def test_jpeg_frames_are_close_to_the_originals(tmp_path, benchmark):
    bag = write_sample_bag(tmp_path / "jpeg", SamplePlan(1, HEIGHT, WIDTH, SEED, jpeg_quality=95), progress=False)
    with Reader(bag) as reader:
        (connection,) = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        (_, _, data), = list(reader.messages(connections=[connection]))
    msg = deserialize_message(bytes(data), CompressedImage)
    assert bytes(msg.data[:2]) == b"\xff\xd8" and "jpeg" in msg.format
    decoded = np.asarray(PILImage.open(io.BytesIO(bytes(msg.data)))).astype(int)
    original = png(benchmark / "images" / "synth_000000.png").astype(int)
    assert 0 < np.abs(decoded - original).mean() < 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample_model") / "tiny.safetensors"
    save_weights(make_model(TINY, 3), path)
    return path


def closed_miou(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """Brute force: per class |pred & truth| / |pred | truth| over known pixels, mean over classes seen."""
    ious = []
    for c in range(num_classes):
        intersection = union = 0
        for prediction, truth in pairs:
            known = truth < num_classes
            intersection += np.count_nonzero((prediction == c) & (truth == c) & known)
            union += np.count_nonzero(((prediction == c) | (truth == c)) & known)
        if union:
            ious.append(intersection / union)
    return float(np.mean(ious))


def test_bag_eval_open_set_scores_and_pictures(tmp_path, sample_bag, benchmark, weights):
    out = tmp_path / "out"
    status = bag_eval(["--bag", str(sample_bag), "--image-topic", IMAGE_TOPIC, "--labels-topic", ANOMALY_TOPIC,
                       "--semantic-topic", SEMANTIC_TOPIC, "--weights", str(weights), "--pictures", "--sheet", "2",
                       "--track", "obstacle", "--out", str(out), *OPTIONS])
    assert status == 0

    predictor = Predictor.from_weights(weights, short_side=64, max_size=128)
    class_set = predictor.class_set
    expected_open = OpenSetIoU(class_set.num_classes, class_set.names)
    expected_instances = UnknownInstanceQuality(min_area=10)
    closed_pairs = []
    for index in range(FRAMES):
        image = png(benchmark / "images" / f"synth_{index:06d}.png")
        semantic = png(benchmark / "labels_semantic" / f"synth_{index:06d}.png")
        # The node's defaults: unknown instances from the unknown pixels, found at mask resolution.
        prediction = predictor(image, openset_threshold=THRESHOLD, panoptic=True, panoptic_resolution="mask",
                               panoptic_params=PanopticParams(min_component_area=10, unknown_source="anomaly",
                                                              anomaly_threshold=THRESHOLD))
        expected_instances.update(png(benchmark / "labels_masks" / f"synth_{index:06d}.png"), prediction.instances,
                                  [s["id"] for s in prediction.segments if s["unknown"]])
        expected_open.update(prediction.labels, semantic)
        closed_pairs.append((prediction.semseg, semantic))
        # The node's published pictures, decoded from the PNGs m2a_bag_eval wrote.
        heat = colorize_scores(prediction.anomaly, 0.0, 1.0, "inferno")
        np.testing.assert_array_equal(png(out / "pictures" / f"{stamp(index)}_heatmap.png"), heat)
        np.testing.assert_array_equal(png(out / "pictures" / f"{stamp(index)}_labels.png"),
                                      colorize_labels(prediction.labels, class_set))
        overlay = png(out / "pictures" / f"{stamp(index)}_overlay.png")
        assert overlay.shape == (HEIGHT, WIDTH, 3) and not np.array_equal(overlay, image)
    expected = expected_open.compute()

    report = json.loads((out / "report.json").read_text())
    open_set = report["open_set"]
    assert open_set["semantic_frames"] == FRAMES and open_set["semantic_frames_without_label"] == 0
    assert open_set["open_mIoU"] == pytest.approx(expected["open_mIoU"], abs=1e-12)
    assert open_set["unknown_IoU"] == pytest.approx(expected["unknown_IoU"], abs=1e-12)
    assert open_set["closed_mIoU"] == pytest.approx(closed_miou(closed_pairs, class_set.num_classes), abs=1e-12)
    assert report["openset_threshold"] == THRESHOLD
    assert report["unknown_instances"] == pytest.approx(expected_instances.compute())
    assert report["unknown_instances"]["instance_frames"] == FRAMES
    assert report["pictures"]["frames"] == FRAMES
    sheet = PILImage.open(out / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.size[0] > 5 * 150   # five columns of pictures

    markdown = (out / "report.md").read_text()
    header = "|  | AuPRC | FPR95 | sIoU | PPV | mean_F1 | open_mIoU | closed_mIoU | unknown_IoU | unknown_PQ |"
    assert header in markdown
    row = markdown.split(header)[1].splitlines()[2]
    metrics = json.loads((out / "metrics.json").read_text())
    cells = [f"{100 * metrics[k]:.2f}" for k in ("AuPRC", "FPR95", "sIoU", "PPV", "mean_F1")]
    cells += [f"{100 * open_set[k]:.2f}" for k in ("open_mIoU", "closed_mIoU", "unknown_IoU")]
    cells += [f"{100 * report['unknown_instances']['unknown_PQ']:.2f}"]
    assert row == "| sample | " + " | ".join(cells) + " |"


def test_open_set_errors_are_one_line(tmp_path, sample_bag, weights, capsys):
    common = ["--bag", str(sample_bag), "--image-topic", IMAGE_TOPIC, "--weights", str(weights),
              "--out", str(tmp_path / "out"), *OPTIONS]
    assert bag_eval([*common, "--semantic-topic", SEMANTIC_TOPIC, "--sheet", "0", "--set", "publish=[anomaly]"]) == 2
    assert "add 'labels' to the 'publish' parameter" in capsys.readouterr().err
    # Without the picture outputs there is no contact sheet by default, and asking for one is an error.
    assert bag_eval([*common, "--set", "publish=[anomaly, labels]"]) == 0
    assert not (tmp_path / "out" / "contact_sheet.png").exists()
    capsys.readouterr()
    assert bag_eval([*common, "--set", "publish=[anomaly, labels]", "--sheet", "2"]) == 2
    assert "pictures need the node outputs anomaly_color, labels_color, overlay" in capsys.readouterr().err
    # Semantic labels with an id the model does not have (30 of 19 classes).
    bad = tmp_path / "bad"
    with BagWriter(bad, "mcap") as writer:
        for message in open_bag(sample_bag).messages([IMAGE_TOPIC]):
            writer.write(message.topic, message.msgtype, message.log_time, message.data)
            labels = Image(encoding="mono8", height=HEIGHT, width=WIDTH, step=WIDTH,
                           data=np.full(HEIGHT * WIDTH, 30, np.uint8).tobytes())
            labels.header = deserialize_message(message.data, CompressedImage).header
            writer.write(SEMANTIC_TOPIC, "sensor_msgs/msg/Image", message.log_time, serialize_message(labels))
    assert bag_eval(["--bag", str(bad), *common[2:], "--semantic-topic", SEMANTIC_TOPIC, "--sheet", "0"]) == 2
    error = capsys.readouterr().err
    (line,) = [line for line in error.splitlines() if "error" in line]   # the rest is the progress bar
    assert "has values [30]" in line and "class ids 0..18" in line


def test_committed_sample_bag_is_the_held_out_benchmark():
    """data/demo/synth_heldout (what `make demo` runs on): readable by rosbags, under 20 MB, and its first and last
    frames are those of the held-out benchmark (the recipe's seed; size as stored in the bag)."""
    from m2a_core.synthetic.writer import MAX_ANOMALIES, MIN_ANOMALIES, anomaly_frame, anomaly_labels, open_set_labels
    from m2a_ros.bags.sample import held_out_plan

    bag = Path(__file__).resolve().parents[1] / "data" / "demo" / "synth_heldout"
    assert sum(f.stat().st_size for f in bag.iterdir()) < 20e6
    seed = held_out_plan()["seed"]
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {IMAGE_TOPIC: 90, ANOMALY_TOPIC: 90, SEMANTIC_TOPIC: 90}
        wanted = {stamp(0), stamp(89)}
        messages = [(c.topic, t, bytes(d)) for c, t, d in reader.messages(start=stamp(0), stop=stamp(89) + 1)
                    if t in wanted]
    assert len(messages) == 6
    for topic, log_time, data in messages:
        index = (log_time - START_NS) // 100_000_000
        if topic == IMAGE_TOPIC:
            picture = np.asarray(PILImage.open(io.BytesIO(bytes(deserialize_message(data, CompressedImage).data))))
            frame = anomaly_frame(seed, index, picture.shape[0], picture.shape[1], MIN_ANOMALIES, MAX_ANOMALIES)
            np.testing.assert_array_equal(picture, frame.image)
        else:
            labels = np.frombuffer(bytes(deserialize_message(data, Image).data), np.uint8).reshape(frame.labels.shape)
            expected = anomaly_labels(frame) if topic == ANOMALY_TOPIC else open_set_labels(frame)
            np.testing.assert_array_equal(labels, expected)
