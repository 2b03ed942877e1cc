"""How long a job that failed temporarily waits before its next attempt."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ligoenv.store.errors import ConfigError


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: `base * factor**(n-1)` seconds after the n-th attempt, at most `max`."""

    base: float = 2.0
    factor: float = 2.0
    max: float = 300.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.base, self.factor, self.max)):
            raise ConfigError(f"backoff values must be finite numbers, got {self}")
        if self.base <= 0:
            raise ConfigError(f"backoff base must be positive, got {self.base}")
        if self.factor < 1:
            raise ConfigError(f"backoff factor must be at least 1, got {self.factor}")
        if self.max < self.base:
            raise ConfigError(f"backoff max ({self.max}) must be at least its base ({self.base})")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after `attempts` (>= 1) attempts have failed."""
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        # Compare exponents instead of computing a huge power that would overflow.
        if (attempts - 1) * math.log(self.factor) >= math.log(self.max / self.base):
            return self.max
        return min(self.max, self.base * self.factor ** (attempts - 1))
