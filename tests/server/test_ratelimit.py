"""The per-registry pace of bulk requests, on a clock that moves only when it sleeps."""

from __future__ import annotations

import pytest

from ligoenv_server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_burst_of_one_second_then_steady_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    for _ in range(8):
        limiter.wait()
    # 4/s with a burst of a second's worth: the first four go at once, then one per 0.25 s
    assert clock.sleeps == [0.25, 0.25, 0.25, 0.25]
    assert clock.now == pytest.approx(101.0)


def test_pause_holds_every_request() -> None:
    clock = Clock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    limiter.wait()
    limiter.pause(2.0)  # a 429 with Retry-After: 2
    limiter.wait()
    assert clock.sleeps == [pytest.approx(2.0)]
    assert limiter.paused == 2.0


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
