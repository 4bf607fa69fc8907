"""Per-connection manners: a token bucket for message rate, a strike counter for errors.

Both take the time as an argument (seconds on any monotonic clock, e.g. ``loop.time()``) and
never read a clock themselves. A clock that steps backwards is treated as standing still.
"""

from __future__ import annotations

from collections import deque

#: Tokens forgiven to floating-point rounding: 0.05 s at 10/s must refill exactly half a token.
_ROUNDING = 1e-9


class TokenBucket:
    """Allow ``rate_per_s`` messages per second on average, and bursts of up to ``burst``.

    The bucket starts full. Each call to :meth:`allow` that succeeds takes ``cost`` tokens;
    tokens refill continuously at ``rate_per_s`` up to ``burst``:

    .. math::

        b(t) = \\min\\left(B,\\; b(t_0) + r\\,(t - t_0)\\right)

    Parameters
    ----------
    rate_per_s
        Sustained rate, tokens per second (> 0).
    burst
        Bucket capacity, tokens (≥ 1).
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s!r}")
        if not burst >= 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (refills the bucket up to ``now``)."""
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        if self._last is None or now > self._last:
            self._last = now
        return self._tokens

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many at ``now``; say whether it did."""
        tokens = self.tokens(now)
        if tokens + _ROUNDING >= cost:
            self._tokens = max(0.0, tokens - cost)
            return True
        return False


class StrikeCounter:
    """Count errors in a sliding window; say when ``limit`` of them fall within ``window_s``.

    Parameters
    ----------
    limit
        Strikes within the window that exhaust the counter (≥ 1).
    window_s
        Window length in seconds (> 0).
    """

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=limit)

    def count(self, now: float) -> int:
        """Strikes recorded within the window that ends at ``now``."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times)

    def record(self, now: float) -> bool:
        """Record one strike at ``now``; ``True`` once ``limit`` strikes lie within the window."""
        self._times.append(max(now, self._times[-1]) if self._times else now)
        return self.count(now) >= self.limit
