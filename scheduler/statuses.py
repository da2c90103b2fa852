"""A job's statuses, named once: the document's `status` and the groups the code asks about.

`queued` -> `pending` -> `running` -> `succeeded` | `failed` | `cancelled` (docs/design.md).
"""

from __future__ import annotations

from typing import Literal, get_args

JobStatus = Literal["queued", "pending", "running", "succeeded", "failed", "cancelled"]
ALL: tuple[JobStatus, ...] = get_args(JobStatus)
ACTIVE: tuple[JobStatus, ...] = ("queued", "pending", "running")  # counts against the per-user cap
WITH_RUNNER: tuple[JobStatus, ...] = ("pending", "running")  # handed to a runner, not ended
NOT_STARTED: tuple[JobStatus, ...] = ("queued", "pending")  # nothing has run yet
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")  # never changes again
