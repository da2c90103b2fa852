"""Adoption: at the watches' first list, what becomes of each job the runner knows.

- A job the DB listed as active (ADOPTING) is followed again if its Job exists (found by label);
  if not, it was removed while the service was down: a stored result.json says it succeeded,
  else it failed ("no longer exists").
- A Job the DB did not list (UNKNOWN): ended ones are left to their TTL (nothing is reported,
  nothing saved: the owner may have deleted the prefix); unfinished ones older than the runner
  by KUBE_ORPHAN_MIN_AGE_SECONDS are orphans and deleted; younger ones may be another replica's
  (a rolling update) and are followed like any other.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime

from kubernetes import client as k

from job_image.storage import Storage, StorageError
from scheduler.runners.kubernetes import objects
from scheduler.runners.kubernetes.status import Observation, observe
from scheduler.runners.kubernetes.tracking import (
    ConcludeLost,
    Decision,
    JobState,
    Phase,
    is_orphan_age,
    orphaned,
    see,
)

log = logging.getLogger(__name__)


def adopt(
    state: JobState, job: k.V1Job | None, pods: Sequence[k.V1Pod], *, built_at: datetime, margin: float
) -> Decision:
    """The state once the first list is in (pure); decide() then takes it from there."""
    state, job = see(state, job)
    if state.phase is Phase.ADOPTING:
        if job is not None:  # the DB's view may be stale: report once
            return dataclasses.replace(state, phase=Phase.TRACKING, reported=None), []
        return dataclasses.replace(state, phase=Phase.FINISHING), [ConcludeLost()]
    if state.phase is not Phase.UNKNOWN or job is None:
        return state, []
    if observe(job, pods).done:
        return dataclasses.replace(state, phase=Phase.ENDED), []
    if is_orphan_age(job.metadata.creation_timestamp, built_at, margin):
        return orphaned(state), []
    return dataclasses.replace(state, phase=Phase.TRACKING), []


def lost_end(state: JobState, storage: Storage, now: datetime) -> Observation:
    """The end of a job whose Job vanished while the service was down (reads storage)."""
    key = f"{state.prefix}result.json"
    try:
        stored = bool(state.prefix) and storage.stat(key) is not None
    except StorageError as exc:
        log.warning("cannot stat %s: %s", key, exc)
        stored = False
    if stored:
        return Observation("succeeded", finished_at=now)
    return Observation(
        "failed",
        finished_at=now,
        error=f"Its Kubernetes Job {objects.job_name(state.job_id)} no longer exists "
        "(removed while the service was down) and it left no result.",
    )
