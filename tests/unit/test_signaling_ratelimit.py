"""Token bucket and strike counter, driven by an injected clock."""

from __future__ import annotations

import pytest

from signaling.ratelimit import StrikeCounter, TokenBucket


def test_bucket_starts_full_and_allows_a_burst():
    bucket = TokenBucket(rate_per_s=10, burst=5)
    assert [bucket.allow(0.0) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate_per_s=10, burst=5)
    for _ in range(5):
        bucket.allow(0.0)
    assert not bucket.allow(0.05)
    assert bucket.allow(0.1)
    assert not bucket.allow(0.1)


def test_bucket_never_holds_more_than_its_burst():
    bucket = TokenBucket(rate_per_s=10, burst=5)
    bucket.allow(0.0)
    assert bucket.tokens(1000.0) == 5


def test_bucket_sustains_exactly_its_rate():
    bucket = TokenBucket(rate_per_s=50, burst=1)
    allowed = sum(bucket.allow(i * 0.001) for i in range(10_000))  # 10 s at 1000 tries/s
    assert allowed == pytest.approx(1 + 50 * 10, abs=1)


def test_bucket_treats_a_clock_stepping_back_as_standing_still():
    bucket = TokenBucket(rate_per_s=10, burst=2)
    bucket.allow(100.0)
    bucket.allow(100.0)
    assert not bucket.allow(50.0)
    assert not bucket.allow(100.05)
    assert bucket.allow(100.1)


def test_bucket_cost_takes_several_tokens():
    bucket = TokenBucket(rate_per_s=1, burst=10)
    assert bucket.allow(0.0, cost=7)
    assert not bucket.allow(0.0, cost=4)
    assert bucket.allow(0.0, cost=3)


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (1, 0.5), (float("nan"), 5)])
def test_bucket_refuses_nonsense_settings(rate, burst):
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, burst)


def test_strikes_below_the_limit_do_not_exhaust():
    strikes = StrikeCounter(limit=3, window_s=10)
    assert not strikes.record(0.0)
    assert not strikes.record(1.0)


def test_limit_strikes_within_the_window_exhaust():
    strikes = StrikeCounter(limit=3, window_s=10)
    strikes.record(0.0)
    strikes.record(1.0)
    assert strikes.record(9.9)


def test_strikes_older_than_the_window_expire():
    strikes = StrikeCounter(limit=3, window_s=10)
    strikes.record(0.0)
    strikes.record(1.0)
    assert not strikes.record(10.0)
    assert strikes.count(10.0) == 2
    assert strikes.count(30.0) == 0


def test_steady_trickle_of_strikes_never_exhausts():
    strikes = StrikeCounter(limit=3, window_s=10)
    assert not any(strikes.record(t * 5.0) for t in range(100))


@pytest.mark.parametrize(("limit", "window_s"), [(0, 10), (3, 0), (3, -1)])
def test_strike_counter_refuses_nonsense_settings(limit, window_s):
    with pytest.raises(ValueError, match="must be"):
        StrikeCounter(limit, window_s)
