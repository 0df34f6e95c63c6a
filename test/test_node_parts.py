"""The node's plain-Python parts: the newest-frame worker, diagnostics health rules, overlay drawing, parameters."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from m2a_ros.diagnostics import ERROR, MODEL_FAILURE, OK, WARN, FrameStats, HealthLimits, assess
from m2a_ros.latest_frame_worker import LatestFrameWorker
from m2a_ros.outputs import draw_box, instance_contour
from m2a_ros.parameters import DEFAULTS, validate


def test_worker_runs_the_newest_item_and_counts_the_replaced_ones():
    release = threading.Event()
    started = threading.Event()
    done: list[int] = []

    def process(item: int) -> None:
        started.set()
        if item == 0:
            release.wait(10)  # hold the worker busy on the first item
        done.append(item)

    worker = LatestFrameWorker(process, on_error=lambda item, exc: None)
    try:
        worker.submit(0)
        assert started.wait(5)
        for item in range(1, 6):  # arrive while busy: 1..4 are replaced, 5 waits
            worker.submit(item)
        release.set()
        assert worker.wait_idle(5)
        assert done == [0, 5]
        assert worker.skipped == 4 and worker.submitted == 6
    finally:
        worker.stop()


def test_worker_survives_a_failing_item():
    errors: list[tuple[int, str]] = []
    done: list[int] = []

    def process(item: int) -> None:
        if item == 1:
            raise ValueError("bad frame")
        done.append(item)

    worker = LatestFrameWorker(process, on_error=lambda item, exc: errors.append((item, str(exc))))
    try:
        for item in (1, 2):
            worker.submit(item)
            assert worker.wait_idle(5)
        assert errors == [(1, "bad frame")] and done == [2]
    finally:
        worker.stop()


def _snapshot(stats: FrameStats, now: float, skipped: int = 0) -> dict:
    return stats.snapshot(now, HealthLimits().window_s, skipped)


def test_health_levels_and_reasons():
    limits = HealthLimits(latency_warn_s=0.2)
    stats = FrameStats()
    assert assess(_snapshot(stats, 100.0), limits, active=False)[0] == OK
    level, message = assess(_snapshot(stats, 100.0), limits, active=True)
    assert level == WARN and "no input frame received yet" in message
    # Healthy: input and output at 10 Hz, low latency.
    for i in range(20):
        stats.record_received(100.0 + i * 0.1)
        stats.record_processed(100.0 + i * 0.1 + 0.05, latency_s=0.05, inference_s=0.03)
    snapshot = _snapshot(stats, 102.0)
    assert assess(snapshot, limits, active=True) == (OK, "running")
    assert snapshot["input_rate_hz"] == pytest.approx(10.0) and snapshot["processed_rate_hz"] == pytest.approx(10.0)
    assert snapshot["latency_p95_s"] == pytest.approx(0.05)
    # Camera stopped: WARN after stale_input_s.
    level, message = assess(_snapshot(stats, 105.0), limits, active=True)
    assert level == WARN and "no input frame for 3.1 s" in message
    # Frames keep arriving but nothing is processed for longer than stalled_s: ERROR.
    for i in range(70):
        stats.record_received(102.0 + i * 0.1)
    level, message = assess(_snapshot(stats, 109.45), limits, active=True)  # last processed at 101.95
    assert level == ERROR and "none processed for 7.5 s" in message
    # Idle (nobody listens) is not an error.
    assert assess(_snapshot(stats, 109.45), limits, active=True, idle=True)[0] == OK


def test_failures_warn_and_model_failures_are_errors():
    limits = HealthLimits()
    stats = FrameStats()
    stats.record_received(10.0)
    stats.record_processed(10.1, latency_s=0.9, inference_s=0.1)
    stats.record_failure(10.2, "encoding", "unsupported image encoding 'yuv422'")
    stats.record_received(10.2)
    level, message = assess(_snapshot(stats, 10.5), limits, active=True)
    assert level == WARN
    assert "1 frames failed" in message and "yuv422" in message and "latency p95 900 ms above 500 ms" in message
    stats.record_failure(10.6, MODEL_FAILURE, "RuntimeError: CUDA out of memory")
    level, message = assess(_snapshot(stats, 10.7), limits, active=True)
    assert level == ERROR and "inference failed on 1 frames" in message
    # Failures and latencies age out of the window.
    stats.record_received(20.0)
    stats.record_processed(20.0, latency_s=0.01, inference_s=0.01)
    assert assess(_snapshot(stats, 20.1), limits, active=True) == (OK, "running")
    assert _snapshot(stats, 20.1)["failures"] == {"encoding": 1, MODEL_FAILURE: 1}


def _contour_brute_force(id_map: np.ndarray, segment_id: int) -> np.ndarray:
    height, width = id_map.shape
    out = np.zeros(id_map.shape, bool)
    for y in range(height):
        for x in range(width):
            if id_map[y, x] != segment_id:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ny, nx = y + dy, x + dx
                if not (0 <= ny < height and 0 <= nx < width) or id_map[ny, nx] != segment_id:
                    out[y, x] = True
    return out


def test_contours_and_boxes_by_hand():
    id_map = np.zeros((6, 7), np.int32)
    id_map[1:5, 2:6] = 3           # a 4x4 block
    window, contour = instance_contour(id_map, 3, [2, 1, 4, 4])
    full = np.zeros((6, 7), bool)
    full[window] = contour
    expected = np.zeros((6, 7), bool)
    expected[1:5, 2:6] = True
    expected[2:4, 3:5] = False     # the 2x2 inside has no other id around it
    np.testing.assert_array_equal(full, expected)
    image = np.zeros((6, 7, 3), np.uint8)
    draw_box(image, [2, 1, 4, 4], (1, 2, 3), thickness=1)
    np.testing.assert_array_equal(image[..., 0] == 1, expected)


def test_contours_match_brute_force_on_random_segments():
    rng = np.random.default_rng(0)
    for _ in range(20):
        id_map = rng.integers(0, 3, (9, 11)).astype(np.int32)  # touching segments, image borders
        for segment_id in (1, 2):
            ys, xs = np.nonzero(id_map == segment_id)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            window, contour = instance_contour(id_map, segment_id, bbox)
            full = np.zeros(id_map.shape, bool)
            full[window] = contour
            np.testing.assert_array_equal(full, _contour_brute_force(id_map, segment_id))


@pytest.mark.parametrize("name, value, reason", [
    ("backend", "caffe", "backend must be one of"),
    ("device", "gpu0", "device must be cpu, cuda or cuda:N"),
    ("threshold", float("nan"), "threshold must be finite"),
    ("threshold", "0.5", "threshold must be a float"),
    ("short_side", True, "short_side must be a int"),
    ("publish", ["anomaly", "heatmap"], "unknown outputs ['heatmap']"),
    ("max_rate", -1.0, "max_rate must be >= 0"),
    ("marker_scale", 0.0, "marker_scale must be > 0"),
    ("panoptic_resolution", "half", "must be 'mask' or 'full'"),
    ("instance_opening", 4, "instance_opening must be an odd number >= 1"),
    ("instance_opening", 0, "instance_opening must be an odd number >= 1"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_parameter_validation_reasons(name, value, reason):
    assert reason in (validate(name, value) or "")


def test_parameter_validation_accepts_defaults_and_ints_for_floats():
    for name, value in DEFAULTS.items():
        assert validate(name, value) is None, name
    assert validate("threshold", 1) is None
    assert validate("score_max", 0.5, {**DEFAULTS, "score_min": 0.2}) is None
    assert "must be above score_min" in validate("score_max", 0.1, {**DEFAULTS, "score_min": 0.2})


def test_keep_freed_memory_stops_page_faults_on_repeated_frame_sized_arrays():
    """In a child process (the setting is process-wide): page faults while 8 MB arrays are made and freed 40
    times, before and after ``keep_freed_memory``; glibc's default returns each one to the kernel."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import resource, numpy as np\n"
        "from m2a_ros.memory import keep_freed_memory\n"
        "def faults():\n"
        "    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(40):\n"
        "        a = np.ones(1 << 20)  # 8 MB, written\n"
        "        del a\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start\n"
        "before = faults()\n"
        "applied = keep_freed_memory()\n"
        "faults()  # the first block after the change is fresh\n"
        "print(before, applied, faults())\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    before, applied, after = done.stdout.split()
    if applied != "True":
        pytest.skip("not glibc: keep_freed_memory changes nothing here")
    assert int(before) >= 40  # every array faulted in afresh (numpy's huge pages: ~25 faults per array here)
    assert int(after) < int(before) / 20, done.stdout
