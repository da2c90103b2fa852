"""The sign-in rate limiter, on a fake clock."""

from __future__ import annotations

from scheduler.core.ratelimit import RateLimiter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_limit_then_blocked_with_the_right_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, window_seconds=60, clock=clock)
    assert [limiter.hit("alice") for _ in range(3)] == [None, None, None]
    assert limiter.hit("alice") == 60
    clock.now += 10.5
    assert limiter.hit("alice") == 50  # 49.5 rounded up
    clock.now += 49.4
    assert limiter.hit("alice") == 1  # 0.1 rounded up, and never less than 1
    clock.now += 0.1
    assert limiter.hit("alice") is None  # the window has moved past all three


def test_retry_after_is_a_whole_number_of_at_least_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, window_seconds=0.25, clock=clock)
    assert limiter.hit("k") is None
    wait = limiter.hit("k")
    assert wait == 1 and isinstance(wait, float)


def test_window_slides() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, window_seconds=60, clock=clock)
    assert limiter.hit("k") is None  # t=0
    clock.now += 30
    assert limiter.hit("k") is None  # t=30
    assert limiter.hit("k") == 30  # the first expires at t=60
    clock.now += 30
    assert limiter.hit("k") is None  # t=60: the first has left, this one takes its place
    assert limiter.hit("k") == 30  # the second (t=30) leaves at t=90
    clock.now += 29
    assert limiter.hit("k") == 1
    clock.now += 1
    assert limiter.hit("k") is None


def test_blocked_attempts_do_not_extend_the_block() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, window_seconds=60, clock=clock)
    limiter.hit("k")
    limiter.hit("k")
    for _ in range(20):
        clock.now += 2
        assert limiter.hit("k") is not None
    clock.now += 20
    assert limiter.hit("k") is None


def test_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, window_seconds=60, clock=clock)
    assert limiter.hit("alice") is None
    assert limiter.hit("alice") is None
    assert limiter.hit("alice") is not None
    assert limiter.hit("bob") is None
    assert limiter.hit("10.0.0.1") is None
    assert limiter.hit("alice") is not None


def test_limit_zero_or_less_disables_it() -> None:
    for limit in (0, -1):
        limiter = RateLimiter(limit, clock=FakeClock())
        assert all(limiter.hit("k") is None for _ in range(1000))
        assert len(limiter) == 0


def test_reset_forgets_a_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)
    limiter.hit("alice")
    limiter.hit("bob")
    assert limiter.hit("alice") is not None
    limiter.reset("alice")
    limiter.reset("nobody")  # unknown keys are fine
    assert limiter.hit("alice") is None
    assert limiter.hit("bob") is not None


def test_expired_keys_are_dropped() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, window_seconds=60, clock=clock)
    for i in range(10_000):
        limiter.hit(f"user{i}")
        clock.now += 0.001  # 10,000 keys within 10 seconds
    assert len(limiter) == 10_000
    clock.now += 55
    limiter.hit("late")  # the first ~5,000 keys are older than the window now
    assert 4_000 < len(limiter) < 6_000
    clock.now += 60
    limiter.hit("later")
    assert len(limiter) == 1


def test_memory_stays_bounded_under_a_stream_of_new_keys() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, window_seconds=60, clock=clock)
    for i in range(100_000):
        limiter.hit(f"sprayed{i}")
        clock.now += 0.01  # 100 new keys a second: about 6,000 in any window
        assert len(limiter) <= 6_001
    assert len(limiter) <= 6_001


def test_number_of_keys_is_capped_dropping_the_oldest() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, window_seconds=60, clock=clock, max_keys=100)
    for i in range(1_000):
        limiter.hit(f"k{i}")  # all within the window
    assert len(limiter) == 100
    assert limiter.hit("k999") is not None  # the newest are kept
    assert limiter.hit("k0") is None  # the oldest was dropped, so it may try again


def test_a_key_that_is_hit_again_is_not_the_oldest() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, window_seconds=60, clock=clock, max_keys=2)
    limiter.hit("a")
    clock.now += 1
    limiter.hit("b")
    clock.now += 1
    limiter.hit("a")  # "a" is now the most recently used
    clock.now += 1
    limiter.hit("c")  # drops "b"
    assert limiter.hit("a") is not None  # "a" kept both of its attempts
    assert limiter.hit("b") is None


def test_per_key_memory_is_bounded_by_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, window_seconds=60, clock=clock)
    for _ in range(1_000):
        limiter.hit("k")
        clock.now += 0.01
    assert len(limiter._hits["k"]) == 3
