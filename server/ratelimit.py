"""Pacing of bulk requests to one registry: a steady rate, and a pause when it says "slow down".

`RateLimiter` is a `ligoenv.oci.transport.Pacer`: the registry client calls `wait()` before
every request and `pause()` on a 429 (or a Retry-After), so every thread backs off together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most `rate` requests per second on average, with bursts of up to one second's worth
    (the generic cell rate algorithm: one "theoretical arrival time" under a lock)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.tolerance = max(0.0, 1.0 - self.interval)  # how far ahead a burst may run
        self._clock, self._sleep = clock, sleep
        self._arrival = clock()  # when the next request would be due at the steady rate
        self._lock = threading.Lock()
        self.paused = 0.0  # seconds of pauses the registry asked for (for reports)

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            due = max(self._arrival, now)
            self._arrival = due + self.interval
        delay = due - self.tolerance - now
        if delay > 0:
            self._sleep(delay)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._arrival = max(self._arrival, self._clock() + seconds + self.tolerance)
            self.paused += seconds
