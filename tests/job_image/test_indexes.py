"""Interval strings of indexes, both ways, and the task a retry's Job index runs."""

from __future__ import annotations

import pytest

from job_image.indexes import intervals, parse, task_of
from job_image.tasks import from_env


@pytest.mark.parametrize(
    ("text", "indexes"), [("", ()), ("3", (3,)), ("1,3-5", (1, 3, 4, 5)), ("0-2,7", (0, 1, 2, 7))]
)
def test_intervals_both_ways(text: str, indexes: tuple[int, ...]) -> None:
    assert parse(text) == indexes and intervals(indexes) == text
    assert intervals([5, 4, 3, 1, 3]) == "1,3-5"


@pytest.mark.parametrize("bad", ["a", "1-", "-2", "1,,x"])
def test_a_malformed_list_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a list of indexes"):
        parse(bad)


def test_a_retrys_job_index_k_runs_the_kth_task() -> None:
    assert task_of(1, "2,5-6") == 5 and task_of(1, "") == 1
    with pytest.raises(ValueError, match="outside TASK_INDEXES"):
        task_of(3, "2,5-6")
    env = {"RENDER_ARRAY": '{"split": 8}', "JOB_COMPLETION_INDEX": "2", "TASK_INDEXES": "1,3,6-7"}
    assert from_env(env)[1] == 6
