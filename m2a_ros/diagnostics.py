"""Frame statistics and their /diagnostics status (DiagnosticArray built directly: no diagnostic_updater).

``FrameStats`` is updated from the subscription callbacks and the inference worker (thread-safe);
``assess`` turns a snapshot into a level and the reasons for it, and is plain Python so it is testable
without ROS.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}
MODEL_FAILURE = "inference"  # failure kind of an exception in the model itself (not the input's fault)


@dataclass(frozen=True)
class HealthLimits:
    latency_warn_s: float = 0.5        # p95 of (publish time - capture stamp) above this: WARN
    stale_input_s: float = 2.0         # no input for this long while active: WARN
    stalled_s: float = 5.0             # input arrives but nothing processed for this long: ERROR
    window_s: float = 5.0              # rates and recent failures are over this window


class FrameStats:
    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.failures: Counter[str] = Counter()
        self._received_times: deque[float] = deque(maxlen=window)
        self._processed_times: deque[float] = deque(maxlen=window)
        self._failure_times: deque[tuple[float, str]] = deque(maxlen=window)
        self._timings: deque[tuple[float, float, float]] = deque(maxlen=window)  # (when, latency, inference)
        self._last_failure = ""
        self._first_received: float | None = None

    def record_received(self, now: float) -> None:
        with self._lock:
            self.received += 1
            if self._first_received is None:
                self._first_received = now
            self._received_times.append(now)

    def record_processed(self, now: float, latency_s: float, inference_s: float) -> None:
        with self._lock:
            self.processed += 1
            self._processed_times.append(now)
            self._timings.append((now, latency_s, inference_s))

    def record_failure(self, now: float, kind: str, message: str) -> None:
        with self._lock:
            self.failures[kind] += 1
            self._failure_times.append((now, kind))
            self._last_failure = f"{kind}: {message}"

    def snapshot(self, now: float, window_s: float, skipped: int) -> dict:
        with self._lock:
            def rate(times: deque[float]) -> float:
                recent = [t for t in times if now - t <= window_s]
                if len(recent) < 2:
                    return 0.0
                span = max(recent[-1] - recent[0], 1e-9)
                return (len(recent) - 1) / span

            recent = np.asarray([(lat, inf) for t, lat, inf in self._timings if now - t <= window_s]).reshape(-1, 2)
            latencies, inference = recent[:, 0], recent[:, 1]
            return {
                "received": self.received,
                "processed": self.processed,
                "skipped": skipped,
                "failures": dict(self.failures),
                "failed_total": sum(self.failures.values()),
                "recent_failures": sum(1 for t, _ in self._failure_times if now - t <= window_s),
                "recent_model_failures": sum(1 for t, kind in self._failure_times
                                             if now - t <= window_s and kind == MODEL_FAILURE),
                "last_failure": self._last_failure,
                "input_rate_hz": rate(self._received_times),
                "processed_rate_hz": rate(self._processed_times),
                "since_first_input_s": now - self._first_received if self._first_received is not None else None,
                "since_input_s": now - self._received_times[-1] if self._received_times else None,
                "since_processed_s": now - self._processed_times[-1] if self._processed_times else None,
                "latency_p50_s": float(np.percentile(latencies, 50)) if latencies.size else None,
                "latency_p95_s": float(np.percentile(latencies, 95)) if latencies.size else None,
                "inference_p50_s": float(np.percentile(inference, 50)) if inference.size else None,
            }


def assess(snapshot: dict, limits: HealthLimits, active: bool, idle: bool = False) -> tuple[int, str]:
    """(level, message): the worst condition decides the level; every reason is listed.

    ERROR: the model fails on frames, or frames arrive and none has been processed for ``stalled_s``
    (without being rejected as bad input). WARN: no input, rejected input, high latency.
    """
    if not active:
        return OK, "inactive (lifecycle): model not running"
    if idle:
        return OK, "idle: nobody subscribes to an output"
    errors, warnings = [], []
    if snapshot["recent_model_failures"]:
        errors.append(f"inference failed on {snapshot['recent_model_failures']} frames "
                      f"in the last {limits.window_s:.0f} s")
    since_input, since_processed = snapshot["since_input_s"], snapshot["since_processed_s"]
    waiting = since_processed if since_processed is not None else snapshot["since_first_input_s"]
    if since_input is not None and since_input < limits.window_s and waiting is not None \
            and waiting > limits.stalled_s and not snapshot["recent_failures"]:
        errors.append(f"frames arrive but none processed for {waiting:.1f} s")
    if since_input is None:
        warnings.append("no input frame received yet")
    elif since_input > limits.stale_input_s:
        warnings.append(f"no input frame for {since_input:.1f} s")
    if snapshot["recent_failures"]:
        warnings.append(f"{snapshot['recent_failures']} frames failed in the last {limits.window_s:.0f} s "
                        f"({snapshot['last_failure']})")
    p95 = snapshot["latency_p95_s"]
    if p95 is not None and p95 > limits.latency_warn_s:
        warnings.append(f"latency p95 {p95 * 1e3:.0f} ms above {limits.latency_warn_s * 1e3:.0f} ms")
    if errors:
        return ERROR, "; ".join(errors + warnings)
    if warnings:
        return WARN, "; ".join(warnings)
    return OK, "running"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:.1f}"


def diagnostic_array(stamp, name: str, hardware_id: str, snapshot: dict, info: dict[str, str],
                     level: int, message: str):
    """One DiagnosticStatus with every counter as a key/value pair, wrapped in a DiagnosticArray."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    values = dict(info)
    values.update({
        "input rate (Hz)": f"{snapshot['input_rate_hz']:.2f}",
        "processed rate (Hz)": f"{snapshot['processed_rate_hz']:.2f}",
        "frames received": str(snapshot["received"]),
        "frames processed": str(snapshot["processed"]),
        "frames skipped (busy)": str(snapshot["skipped"]),
        "frames failed": str(snapshot["failed_total"]),
        "latency p50 (ms)": _ms(snapshot["latency_p50_s"]),
        "latency p95 (ms)": _ms(snapshot["latency_p95_s"]),
        "inference p50 (ms)": _ms(snapshot["inference_p50_s"]),
        "last failure": snapshot["last_failure"] or "none",
    })
    for kind, count in sorted(snapshot["failures"].items()):
        values[f"failed: {kind}"] = str(count)
    status = DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array
