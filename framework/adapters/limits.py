"""Client-side pacing for remote endpoints: a rate limiter and an exponential backoff.

The limiter spaces request starts at least ``1 / rate`` seconds apart (no bursts), so any window of
``w`` seconds holds at most ``floor(w * rate) + 1`` starts, however many threads share it; retries
count as requests, because the server counts them too.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class RateLimiter:
    """Thread-safe minimum spacing between request starts; ``rate=None`` means no limit."""

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be positive or None, got {rate}")
        self.interval = 0.0 if rate is None else 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def per(cls, per_second: float | None = None, per_minute: float | None = None, **kw) -> "RateLimiter":
        """The stricter of a per-second and a per-minute limit."""
        rates = [r for r in (per_second, None if per_minute is None else per_minute / 60.0) if r is not None]
        return cls(min(rates) if rates else None, **kw)

    def acquire(self) -> float:
        """Block until this request may start; returns the seconds waited."""
        if self.interval == 0.0:
            return 0.0
        with self._lock:  # reserve a slot under the lock, sleep outside it
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``k`` (1-based): ``base_s * 2**(k-1)`` stretched by up to the fraction ``jitter``,
    at most ``max_s``.

    Jitter only lengthens the delay, so ``base_s * 2**(k-1)`` (capped) is a guaranteed minimum; a
    server's Retry-After, when given, is honoured up to ``max_s``.
    """

    base_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.1

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        d = self.base_s * 2 ** (retry - 1) * (1.0 + self.jitter * (rng or random).random())
        d = min(self.max_s, d)
        if retry_after is not None and retry_after > 0:
            d = max(d, min(retry_after, self.max_s))
        return d
