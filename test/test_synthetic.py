"""The synthetic road world: determinism, class coverage, anomaly labels, outlier pool, layouts, CLI."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2a_core.classes import CITYSCAPES, UNKNOWN_ID
from m2a_core.cli import main
from m2a_core.datasets import open_dataset
from m2a_core.datasets.semantic import cityscapes
from m2a_core.synthetic.anomalies import ANOMALY_FAMILIES, ANOMALY_HUES, anomaly_sprite, hue_degrees
from m2a_core.synthetic.outliers import OUTLIER_FAMILIES, OUTLIER_HUES
from m2a_core.synthetic.scene import Canvas, generate_frame, parked_bicycle, pole, sample_camera
from m2a_core.synthetic.textures import APPEARANCE, Palette, sign_rim
from m2a_core.synthetic.writer import (
    open_set_semantic,
    write_anomaly_benchmark,
    write_cityscapes,
    write_outlier_pool,
)
from m2a_core.training.anomalymix import OutlierPool
from m2a_core.training.data import build_dataset

HEIGHT, WIDTH = 96, 192

# cityscapesscripts' labels.py: class name -> labelId (independent of the writer's table).
OFFICIAL_LABEL_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17, "traffic light": 19,
    "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26,
    "truck": 27, "bus": 28, "train": 31, "motorcycle": 32, "bicycle": 33,
}


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def in_ranges(hues: np.ndarray, ranges, tolerance: float) -> np.ndarray:
    inside = np.zeros(hues.shape, bool)
    for low, high in ranges:
        inside |= (hues >= low - tolerance) & (hues <= high + tolerance)
    return inside


def test_same_seed_same_frame_and_other_seed_other_frame():
    first, again = generate_frame(7, HEIGHT, WIDTH, anomalies=2), generate_frame(7, HEIGHT, WIDTH, anomalies=2)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.labels, again.labels)
    other = generate_frame(8, HEIGHT, WIDTH, anomalies=2)
    assert not np.array_equal(first.image, other.image)


def test_written_sets_are_byte_identical_for_a_seed(tmp_path):
    for name in ("a", "b"):
        write_cityscapes(tmp_path / name / "cs", {"train": 2, "val": 1}, HEIGHT, WIDTH, seed=3, progress=False)
        write_anomaly_benchmark(tmp_path / name / "an", 2, HEIGHT, WIDTH, seed=3, progress=False)
        write_outlier_pool(tmp_path / name / "ol", 3, seed=3, progress=False)
    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert len(first) == 3 * 4 + 1 + 2 * 3 + 1 + 3 * 2 + 1
    assert first == second
    write_cityscapes(tmp_path / "c", {"train": 2}, HEIGHT, WIDTH, seed=4, progress=False)
    image = "leftImg8bit/train/synth/synth_000000_000019_leftImg8bit.png"
    assert digest(tmp_path / "c")[image] != first[f"cs/{image}"]


def test_parallel_workers_write_the_same_files(tmp_path):
    write_cityscapes(tmp_path / "one" / "cs", {"val": 3}, HEIGHT, WIDTH, seed=9, progress=False)
    write_cityscapes(tmp_path / "two" / "cs", {"val": 3}, HEIGHT, WIDTH, seed=9, progress=False, workers=2)
    write_anomaly_benchmark(tmp_path / "one" / "an", 3, HEIGHT, WIDTH, seed=9, progress=False)
    write_anomaly_benchmark(tmp_path / "two" / "an", 3, HEIGHT, WIDTH, seed=9, progress=False, workers=2)
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    assert len(digest(tmp_path / "one")) == 3 * 4 + 1 + 3 * 3 + 1


def test_every_cityscapes_class_appears_in_a_batch():
    present = set()
    for seed in range(60):
        present |= set(np.unique(generate_frame(1000 + seed, HEIGHT, WIDTH).labels).tolist())
    assert set(range(19)) <= present
    assert present <= set(range(19)) | {255}  # no anomaly label without anomalies


def test_anomaly_labels_exactly_where_the_anomaly_objects_were_drawn():
    """The same seed without anomalies draws the same scene: the labels may differ only on anomaly pixels,
    and the image only there or where an anomaly's shadow darkened the ground."""
    total = 0
    for seed in range(6):
        with_objects = generate_frame(seed, HEIGHT * 2, WIDTH * 2, anomalies=3)
        without = generate_frame(seed, HEIGHT * 2, WIDTH * 2, anomalies=0)
        anomaly = with_objects.labels == 254
        assert np.array_equal(with_objects.labels != without.labels, anomaly)
        outside = ~anomaly
        assert np.all(with_objects.image[outside] <= without.image[outside])
        total += int(anomaly.sum())
        # The instance map records one anomaly instance per visible object, with its shape family.
        ids = np.unique(with_objects.instances[anomaly])
        assert 0 not in ids
        assert all(with_objects.anomaly_families[int(i)] in ANOMALY_FAMILIES for i in ids)
    assert total > 0


def test_anomaly_colours_lie_outside_the_known_class_colours():
    frame = generate_frame(11, HEIGHT * 4, WIDTH * 4, anomalies=4)
    anomaly = frame.labels == 254
    assert anomaly.sum() > 50
    pixels = frame.image.reshape(-1, 3).astype(float)
    saturated = ((pixels.max(1) - pixels.min(1)) > 0.4 * pixels.max(1)) & (pixels.max(1) > 50)
    hues = hue_degrees(pixels)
    matches = in_ranges(hues, ANOMALY_HUES, 10.0) & saturated
    # Most anomaly pixels have the anomaly colours (lighting shifts some); almost no other pixel does.
    assert matches[anomaly.ravel()].mean() > 0.7
    assert matches[~anomaly.ravel()].mean() < 0.01


def test_outlier_pool_is_disjoint_in_appearance_from_test_anomalies(tmp_path):
    assert not set(OUTLIER_FAMILIES) & set(ANOMALY_FAMILIES)
    outlier_grid = np.concatenate([np.arange(low, high + 0.5) for low, high in OUTLIER_HUES])
    anomaly_grid = np.concatenate([np.arange(low, high + 0.5) for low, high in ANOMALY_HUES])
    apart = np.abs(outlier_grid[:, None] - anomaly_grid[None, :]) % 360
    assert np.minimum(apart, 360 - apart).min() >= 10  # degrees around the hue circle
    write_outlier_pool(tmp_path, 20, seed=1, min_size=16, max_size=48, progress=False)
    outlier_hues = []
    for mask_path in sorted((tmp_path / "ood_annotations").glob("*.png")):
        annotation = np.asarray(Image.open(mask_path))
        assert set(np.unique(annotation).tolist()) == {0, 254}
        image = np.asarray(Image.open(tmp_path / "images" / mask_path.name).convert("RGB"))
        outlier_hues.append(hue_degrees(image[annotation == 254]))
    outlier_hues = np.concatenate(outlier_hues)
    rng = np.random.default_rng(0)
    anomaly_hues = np.concatenate([hue_degrees(s.image[s.mask]) for s in
                                   (anomaly_sprite(rng, int(rng.integers(16, 48))) for _ in range(20))])
    assert in_ranges(outlier_hues, OUTLIER_HUES, 5.0).all()
    assert in_ranges(anomaly_hues, ANOMALY_HUES, 5.0).all()
    assert not in_ranges(outlier_hues, ANOMALY_HUES, 5.0).any()


def test_a_parked_bicycle_is_labelled_with_whole_wheels_that_show_the_background():
    camera = sample_camera(np.random.default_rng(0), 256, 512)
    labels, paint = np.zeros((256, 512), np.uint8), np.zeros((256, 512), np.int32)  # road, palette index 0
    palette = Palette()
    palette.add((90, 90, 90))
    canvas = Canvas(labels, paint, palette)
    parked_bicycle(np.random.default_rng(1), 0.0, 4.0)(canvas, camera)
    bicycle = np.asarray(canvas.labels) == 18
    painted = np.asarray(canvas.paint) != 0
    instance = np.unique(np.asarray(canvas.instances)[bicycle])
    assert instance.tolist() == [1]
    # A row through a wheel, between its centre and top (the centre row is a spoke): bicycle label across the
    # whole disc, but background paint between rim and spokes.
    centre_x, centre_y = (int(round(v)) for v in camera.project(0.55, 0.34, 4.0))
    radius = 0.34 * camera.scale(4.0)
    chord = int(radius * np.sqrt(1 - 0.4**2))
    row_labels, row_paint = bicycle[centre_y - int(0.4 * radius)], painted[centre_y - int(0.4 * radius)]
    inside = slice(centre_x - chord + 3, centre_x + chord - 2)
    assert row_labels[inside].all()
    assert not row_paint[inside].all() and row_paint[inside].any()
    # Every bicycle-painted pixel is labelled bicycle, and the label covers more than the paint (the discs).
    assert not (painted & ~bicycle).any()
    assert bicycle.sum() > 1.5 * painted.sum()


@pytest.mark.parametrize("face", list(APPEARANCE[7].colors))
def test_signs_have_a_rim_of_another_colour_than_their_face(face):
    rim = sign_rim(face)
    assert np.abs(np.subtract(rim, face)).sum() > 150  # white faces too: alone they look like the sky
    jittered = tuple(int(v) + 9 for v in face)
    assert sign_rim(jittered) == rim
    # Drawn, a sign has exactly two colours: the (jittered) face and this rim.
    rng = np.random.default_rng(4)
    for _ in range(300):  # poles until one carries a sign of this face inside the image
        canvas = Canvas(np.full((512, 1024), 10, np.uint8), np.zeros((512, 1024), np.int32), Palette())
        canvas.palette.add((0, 0, 0))
        pole(rng, 0.0, 15.0, 1)(canvas, sample_camera(np.random.default_rng(0), 512, 1024))
        signs = np.asarray(canvas.labels) == 7
        if signs.sum() < 100:
            continue
        palette = np.concatenate(canvas.palette.colors).astype(int)
        colours = {tuple(c) for c in palette[np.asarray(canvas.paint)[signs]]}
        ys, xs = np.nonzero(signs)
        centre = tuple(palette[np.asarray(canvas.paint)[int(ys.mean()), int(xs.mean())]])
        if np.abs(np.subtract(centre, face)).sum() < 40:
            assert colours == {centre, rim}
            return
    pytest.fail(f"no sign with face {face} drawn")


def test_cityscapes_layout_loads_through_the_readers(tmp_path):
    write_cityscapes(tmp_path, {"train": 3, "val": 2}, HEIGHT, WIDTH, seed=5, progress=False)
    for split, count in (("train", 3), ("val", 2)):
        dataset = cityscapes(tmp_path, split)
        assert len(dataset) == count
        for _name, image, labels in dataset:
            assert image.shape == (HEIGHT, WIDTH, 3) and labels.shape == (HEIGHT, WIDTH)
            assert set(np.unique(labels).tolist()) <= set(range(19)) | {255}
    assert len(open_dataset("cityscapes", tmp_path)) == 2
    folder = tmp_path / "gtFine" / "train" / "synth"
    for train_path in sorted(folder.glob("*_labelTrainIds.png")):
        train = np.asarray(Image.open(train_path))
        ids = np.asarray(Image.open(str(train_path).replace("labelTrainIds", "labelIds")))
        instances = np.asarray(Image.open(str(train_path).replace("labelTrainIds", "instanceIds"))).astype(int)
        for train_id, name in enumerate(CITYSCAPES.names):
            assert np.all(ids[train == train_id] == OFFICIAL_LABEL_IDS[name])
        assert np.all(ids[train == 255] == 0)
        as_label = np.where(instances >= 1000, instances // 1000, instances)
        assert np.array_equal(as_label, ids)
        assert (instances >= 1000).any() == np.isin(train, range(11, 19)).any()


def test_cityscapes_layout_loads_in_the_training_reader(tmp_path):
    write_cityscapes(tmp_path, {"train": 2}, HEIGHT, WIDTH, seed=6, progress=False)
    dataset = build_dataset("cityscapes", tmp_path, "train")
    assert len(dataset) == 2


def test_anomaly_benchmark_loads_through_the_readers(tmp_path):
    write_anomaly_benchmark(tmp_path, 4, HEIGHT * 2, WIDTH * 2, seed=2, min_anomalies=2, max_anomalies=3,
                            progress=False)
    for reader in ("fs_lost_and_found", "smiyc_obstacle", "road_anomaly"):
        dataset = open_dataset(reader, tmp_path)
        assert len(dataset) == 4
    dataset = open_dataset("fs_lost_and_found", tmp_path)
    semantic = open_set_semantic(tmp_path)
    assert semantic.kind == "semantic" and semantic.class_names == CITYSCAPES.names
    for (_, _, labels), (_, _, classes) in zip(dataset, semantic, strict=True):
        assert set(np.unique(labels).tolist()) <= {0, 1, 255}
        assert (labels == 1).any()  # every frame has a visible anomaly
        assert np.array_equal(labels == 1, classes == UNKNOWN_ID)
        assert np.array_equal(labels == 255, classes == 255)


def test_outlier_pool_loads_in_anomalymix(tmp_path):
    write_outlier_pool(tmp_path, 4, seed=2, progress=False)
    pool = OutlierPool(tmp_path)
    assert len(pool) == 4
    obj = pool.load(0)
    assert obj.mask.any() and obj.image.shape[:2] == obj.mask.shape


def test_cli_writes_all_three_sets_with_previews(tmp_path, capsys):
    assert main(["synth", "cityscapes", "--out", str(tmp_path / "cs"), "--train", "2", "--val", "1",
                 "--height", str(HEIGHT), "--width", str(WIDTH), "--no-progress",
                 "--preview", str(tmp_path / "cs.png")]) == 0
    assert main(["synth", "anomaly", "--out", str(tmp_path / "an"), "--num", "2", "--height", str(HEIGHT),
                 "--width", str(WIDTH), "--no-progress", "--preview", str(tmp_path / "an.png")]) == 0
    assert main(["synth", "outliers", "--out", str(tmp_path / "ol"), "--num", "5", "--no-progress",
                 "--preview", str(tmp_path / "ol.png")]) == 0
    printed = capsys.readouterr().out
    assert "3 frames" in printed and "2 frames" in printed and "5 objects" in printed and "ms each" in printed
    for preview in ("cs.png", "an.png", "ol.png"):
        with Image.open(tmp_path / preview) as picture:
            assert picture.size[0] > 200 and picture.size[1] > 100
    assert len(list((tmp_path / "cs" / "leftImg8bit" / "train" / "synth").glob("*.png"))) == 2
    assert len(list((tmp_path / "an" / "labels_masks").glob("*.png"))) == 2


@pytest.mark.parametrize("arguments, message", [
    (["cityscapes", "--height", "8"], "at least 32x32"),
    (["cityscapes", "--train", "0"], "nothing to write"),
    (["anomaly", "--num", "0"], "--num must be >= 1"),
    (["outliers", "--num", "0"], "--num must be >= 1"),
    (["anomaly", "--num", "1", "--min-anomalies", "3", "--max-anomalies", "2"], "1 <= min <= max"),
    (["outliers", "--num", "2", "--min-size", "50", "--max-size", "10"], "min-size <= max-size"),
    (["outliers", "--num", "2", "--seed", "-1"], "--seed must be >= 0"),
    (["outliers", "--num", "2", "--workers", "0"], "workers must be >= 1"),
])
def test_cli_rejects_bad_arguments_with_one_line(tmp_path, capsys, arguments, message):
    command = [arguments[0], "--out", str(tmp_path / "out"), "--no-progress", *arguments[1:]]
    if arguments[0] == "cityscapes" and "--train" not in arguments:
        command += ["--train", "1"]
    assert main(["synth", *command]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and error.count("\n") == 1


def test_cli_refuses_a_file_as_output_folder(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["synth", "outliers", "--out", str(target), "--num", "1", "--no-progress"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_anomalies_range_from_small_obstacles_to_large_objects():
    from scipy import ndimage

    from m2a_core.synthetic.writer import anomaly_frame

    sizes, on_road, beside = [], 0, 0
    for index in range(30):  # sizes are log-uniform: a few dozen frames hold both ends
        frame = anomaly_frame(0, index, HEIGHT * 2, WIDTH * 2, 1, 4)
        components, count = ndimage.label(frame.anomaly_mask)
        sizes += np.bincount(components.ravel())[1:].tolist()
        # Where each object stands: the known class just below its lowest pixel.
        for component in range(1, count + 1):
            rows, cols = np.nonzero(components == component)
            below = frame.labels[min(rows.max() + 2, frame.labels.shape[0] - 1), cols]
            on_road += int(np.any(below == 0))
            beside += int(np.any(np.isin(below, (1, 9))))
    assert min(sizes) < 50 and max(sizes) > 1000
    assert on_road > 0 and beside > 0


def test_bench_synth_prints_the_time_per_frame(capsys):
    assert main(["bench", "synth", "--frames", "2", "--height", "64", "--width", "128"]) == 0
    printed = capsys.readouterr().out
    assert "64x128" in printed
    for row in ("scene ", "scene + 1-4 anomalies", "outlier object"):
        line = next(line for line in printed.splitlines() if line.startswith(row))
        median, p90, per_second = (float(value) for value in line[len(row):].split()[-3:])
        assert 0 < median <= p90 and per_second > 0
