"""The one backoff helper every retry loop uses."""

from __future__ import annotations

from job_image.backoff import Backoff


def test_doubles_from_first_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, cap=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.next() == 0.5


def test_jitter_only_adds_up_to_its_fraction() -> None:
    delays = [Backoff(1.0, cap=10.0, jitter=0.1).next() for _ in range(50)]
    assert all(1.0 <= d <= 1.1 for d in delays) and len(set(delays)) > 1


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff(0.2, cap=30.0, failures=10_000)
    assert backoff.next() == 30.0
