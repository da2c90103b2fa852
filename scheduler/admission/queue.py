"""The queue manager: who waits for a device class, and whose job is next.

Fair share per class: the next job comes from the user with the least current use of that
class. A user's use is the estimated seconds of the jobs admitted to that class (their cost,
not their count), each weighed 1 when admitted and halving every `half_life` seconds after.
- By cost: a user just admitted with a ten-minute render yields to users whose renders take
  seconds, until those have had as much or it is forgotten: short jobs rarely wait behind
  long ones (which keeps everyone's slowdown low), and splitting a render into many small ones
  admitted together gains nothing, since the pieces add up to the same use.
- Decayed rather than only what runs this instant: with one slot, whoever's job just ended
  would otherwise have no use at every decision, and fair share would fall back to FIFO.
  The half-life (seconds, see assign.HALF_LIFE) keeps the memory short: a user is not held
  back for minutes by one long render, and among users served a while ago, roughly the one
  served longest ago comes first.
Between users of equal use the one waiting longest (their oldest queued job) goes first.

Within one user: `priority` high > normal > low, then the oldest. Priority only reorders a
user's own jobs: it never enters the comparison between users.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from scheduler.admission.throughput import CLASSES, DeviceClass, Method

Priority = Literal["low", "normal", "high"]
DeviceChoice = Literal["auto", "cpu", "gpu"]
RANK: dict[str, int] = {"high": 0, "normal": 1, "low": 2}
MAX_DOUBLINGS = 900.0  # 2**900 still fits a float: bounds the replay's horizon at 900 half-lives


@dataclass(frozen=True)
class Waiting:
    """A queued task as admission sees it (a plain job is its one task, 0)."""

    job_id: str
    owner: str
    device: DeviceChoice
    priority: Priority
    created_at: datetime
    iterations: float  # estimated at submit, this task's share
    method: Method = "float32"  # how it renders: each method has its own throughput
    task: int = 0

    @property
    def key(self) -> str:
        """The unit admitted: a job's id for its task 0, `<job_id>/<i>` for task i."""
        return self.job_id if self.task == 0 else f"{self.job_id}/{self.task}"

    @property
    def classes(self) -> tuple[DeviceClass, ...]:
        return CLASSES if self.device == "auto" else (self.device,)

    @property
    def own_order(self) -> tuple[int, datetime, str, int]:
        return RANK[self.priority], self.created_at, self.job_id, self.task


class _UserQueue:
    """One user's waiting jobs for one class: by own order, and by age for the tie-break.
    Jobs that left are skipped lazily, so removing one costs nothing: `placed` (in any class,
    shared by both classes' queues) and `moved` (waiting for the other class instead)."""

    def __init__(self, jobs: list[Waiting], placed: set[str], moved: set[str]) -> None:
        self.by_order = sorted(jobs, key=lambda j: j.own_order, reverse=True)  # next at the end
        self.by_age = sorted(jobs, key=lambda j: (j.created_at, j.job_id, j.task), reverse=True)
        self.placed, self.moved = placed, moved

    def _out(self, job: Waiting) -> bool:
        return job.key in self.placed or job.key in self.moved

    def head(self) -> Waiting | None:
        while self.by_order and self._out(self.by_order[-1]):
            self.by_order.pop()
        return self.by_order[-1] if self.by_order else None

    def oldest(self) -> tuple[datetime, str]:
        while self.by_age and self._out(self.by_age[-1]):
            self.by_age.pop()
        return (self.by_age[-1].created_at, self.by_age[-1].job_id) if self.by_age else (datetime.max, "")


class FairQueue:
    """The waiting jobs of one class, handed out by fair share (see the module doc).

    A heap of (use, oldest job, user) with lazy deletion: each change of a user's use or queue
    pushes a fresh entry and stale ones are skipped, so a pick costs O(log users). Use is kept
    in units that grow by 2 every half-life (seconds at time t count seconds * 2**(t/h)):
    decaying every user at once never changes their order, so nothing needs recomputing.
    """

    def __init__(self, jobs: Iterable[Waiting], placed: set[str], half_life: float) -> None:
        self.half_life = half_life
        self.placed, self.moved = placed, set[str]()  # `placed` is shared by both classes' queues
        by_user: dict[str, list[Waiting]] = {}
        for job in jobs:
            by_user.setdefault(job.owner, []).append(job)
        self.users = {owner: _UserQueue(js, self.placed, self.moved) for owner, js in by_user.items()}
        self.use: dict[str, float] = {}
        self._heap: list[tuple[float, tuple[datetime, str], str]] = []
        self._entry: dict[str, tuple[float, tuple[datetime, str], str]] = {}
        for owner in self.users:
            self._push(owner)

    def _push(self, owner: str) -> None:
        queue = self.users[owner]
        if queue.head() is None:
            self._entry.pop(owner, None)
            return
        entry = (self.use.get(owner, 0.0), queue.oldest(), owner)
        self._entry[owner] = entry
        heapq.heappush(self._heap, entry)

    def add_use(self, owner: str, seconds: float, at: float) -> None:
        """A job of `owner` costing `seconds` was admitted `at` seconds from now (< 0: past)."""
        doublings = min(MAX_DOUBLINGS, max(-MAX_DOUBLINGS, at / self.half_life))
        self.use[owner] = self.use.get(owner, 0.0) + seconds * 2.0**doublings
        if owner in self.users:
            self._push(owner)

    def next_user(self) -> str | None:
        """The user whose turn it is, or None when nobody waits."""
        while self._heap:
            entry = self._heap[0]
            owner = entry[2]
            if self._entry.get(owner) is entry:
                queue = self.users[owner]
                if queue.head() is not None and queue.oldest() == entry[1]:
                    return owner
                heapq.heappop(self._heap)
                self._push(owner)  # one of their jobs went elsewhere: re-key them
                continue
            heapq.heappop(self._heap)  # superseded by a newer entry
        return None

    def head(self, owner: str) -> Waiting | None:
        return self.users[owner].head()

    def drop(self, job: Waiting) -> None:
        """`job` leaves this class's queue only (it waits for the other class)."""
        self.moved.add(job.key)
        self._push(job.owner)
