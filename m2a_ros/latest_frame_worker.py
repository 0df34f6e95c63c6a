"""Run work on the newest item only, on a thread of its own, so a ROS executor never blocks on inference.

One pending slot: an item submitted while the worker is busy waits in the slot; a newer one replaces it and
the replaced item is counted as skipped. Nothing ever queues behind the model, so latency stays bounded by
about two inference times whatever the input rate.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class LatestFrameWorker(Generic[Item]):
    def __init__(self, process: Callable[[Item], None], on_error: Callable[[Item, BaseException], None],
                 name: str = "m2a-inference") -> None:
        self._process = process
        self._on_error = on_error
        self._condition = threading.Condition()
        self._pending: Item | None = None
        self._has_pending = False
        self._busy = False
        self._stopping = False
        self.skipped = 0
        self.submitted = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        """Hand over the newest item; returns at once. A pending, not yet started item is dropped."""
        with self._condition:
            self.submitted += 1
            if self._has_pending:
                self.skipped += 1
            self._pending, self._has_pending = item, True
            self._condition.notify()

    @property
    def busy(self) -> bool:
        with self._condition:
            return self._busy or self._has_pending

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or running (tests, shutdown); False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: not (self._busy or self._has_pending), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the item in progress, drop the pending one, end the thread."""
        with self._condition:
            self._stopping = True
            self._has_pending, self._pending = False, None
            self._condition.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._has_pending or self._stopping)
                if self._stopping:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self._process(item)  # type: ignore[arg-type]
            except Exception as exc:  # one bad frame must never end the worker
                self._on_error(item, exc)  # type: ignore[arg-type]
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()
