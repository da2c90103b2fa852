"""Interval strings of indexes, as a Kubernetes Indexed Job writes them ("1,3-5": its status's
completedIndexes and failedIndexes), and `TASK_INDEXES`, the tasks a retried array's Job runs:
its pod of index k runs the k-th of them (docs/design.md, "Render arrays").
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/#JobStatus
"""

from __future__ import annotations

from collections.abc import Iterable


def parse(text: str | None) -> tuple[int, ...]:
    """"1,3-5" -> (1, 3, 4, 5); "" or None -> (). ValueError for anything else."""
    out: list[int] = []
    for part in (text or "").split(","):
        if part.strip():
            first, dash, last = part.strip().partition("-")
            if not first.isdigit() or (dash and not last.isdigit()):
                raise ValueError(f"{text!r} is not a list of indexes such as 1,3-5")
            out.extend(range(int(first), int(last or first) + 1))
    return tuple(out)


def intervals(indexes: Iterable[int]) -> str:
    """Indexes -> "1,3-5" (sorted, each once)."""
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def task_of(index: int, task_indexes: str | None) -> int:
    """The task a Job's index runs: the index-th of `TASK_INDEXES`, or the index itself."""
    if not task_indexes:
        return index
    tasks = parse(task_indexes)
    if not 0 <= index < len(tasks):
        raise ValueError(f"JOB_COMPLETION_INDEX {index} is outside TASK_INDEXES {task_indexes!r}")
    return tasks[index]
