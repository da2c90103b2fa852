"""Range and ETag parsing for result downloads (pure functions)."""

from __future__ import annotations

import pytest

from scheduler.api.streaming import RangeNotSatisfiable, etag_matches, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-500", 100, (90, 99)),  # clipped to the object
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=0-0", 1, (0, 0)),
        ("bytes=0-9,20-29", 100, None),  # several ranges: the whole object
        ("items=0-9", 100, None),  # another unit: ignored
        ("bytes=-", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=5-2", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_etag_matching() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('"x", W/"abc"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')
    assert not etag_matches(None, '"abc"')


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-" + "9" * 5000, 100, (0, 99)),  # int() refuses over 4300 digits: clipped, not a 500
        ("bytes=-" + "9" * 5000, 100, (0, 99)),
        ("bytes=0-9\n", 100, (0, 9)),  # surrounding whitespace is stripped
        ("bytes=٣-", 100, None),  # non-ASCII digits are not digits here: ignored
        ("bytes=0-9 x", 100, None),
    ],
)
def test_awkward_ranges(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


def test_a_start_with_thousands_of_digits_is_unsatisfiable() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=" + "9" * 5000 + "-", 100)
