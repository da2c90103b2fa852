"""The assignment: which queued jobs start now, where, and when every other one should start.

Pure: (queued jobs, admitted jobs, capacity snapshot, throughput, now) -> Plan. It replays the
queue forward in estimated time. Each class has one timeline entry per slot (free now, or when
its running job should end, see `_expected_end`); the earliest free slot of any class takes the
next job of that class's fair queue (queue.py), and the user's use there grows by the job's
estimated seconds. A slot free *now* admits the job for real, if the snapshot can book it;
later slots only give estimates: queue position within the class, estimated start and finish,
and the kept reason (`message`) for every job that waits. Users' use is what queue.py
describes: `active` and `history` (recently finished jobs) seed it, each replayed admission
adds to it.

`auto` jobs wait in both classes' queues and go to the one with the earliest estimated finish:
when an auto job comes up in one class, it is finished there (now + its seconds there)
compared with the other class (its earliest free slot, plus the other class's own work still
waiting spread over its slots, plus its seconds there); if the other is sooner it leaves this
queue and waits for that one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from scheduler.admission.capacity import NOUN, Snapshot
from scheduler.admission.queue import FairQueue, Waiting
from scheduler.admission.throughput import CLASSES, DeviceClass, Throughput

Policy = Literal["fair", "fifo"]
# Seconds; see queue.py. The memory trades the light users' waits against the heavy user's:
# shorter, and use is mostly who was served last (towards FIFO's equal waits); longer, and a
# user who admitted one long render waits behind everyone while it is remembered. Fair share's
# fairness index / light users' slowdown in benchmarks/scheduling.py (arrivals over 4000 s),
# seeds 1-40: 5 s 0.937 / 1.55x, at least 0.9 in 36; 120 s 0.911 / 1.48x, in 31 (and at
# 0.5 s about 0.97 / 2.6x).
HALF_LIFE = 5.0
# Finished jobs that ended longer ago are not read. Those read weigh little (decayed from their
# admission) but more than nothing: with one slot, the user whose long job just ended goes after
# a user who had none, not before them by an older queued job.
HISTORY_HALF_LIVES = 6


@dataclass(frozen=True)
class Admitted:
    """A task holding a slot (handed to the runner: pending or running)."""

    job_id: str
    owner: str
    placement: DeviceClass
    started_at: datetime  # when it was admitted
    seconds: float  # estimated run time in its class


@dataclass(frozen=True)
class Estimate:
    """Where a queued job stands: its class, place in line, predicted times, and why it waits."""

    placement: DeviceClass | None  # the class it waits for (None: no class can ever run it)
    position: int | None  # 1 = the next admitted to that class
    start: datetime | None
    finish: datetime | None
    message: str


@dataclass
class Plan:
    admit: list[tuple[Waiting, DeviceClass]]  # start these now, in this order
    waiting: dict[str, Estimate]  # Waiting.key -> estimate, for every task not admitted


@dataclass(order=True)
class _Slot:
    free_at: float  # seconds after now
    seq: int


def _expected_end(job: Admitted, now: datetime) -> float:
    """Seconds from now until `job` should end. One past its estimate is expected to run as long
    again as it has overrun so far: "now" would be past a moment later, and its successor's
    estimated start with it."""
    return abs((job.started_at - now).total_seconds() + job.seconds)


class _Replay:
    """The state of one forward replay; `plan` below is its only user."""

    def __init__(self, queued: list[Waiting], active: list[Admitted], history: list[Admitted],
                 snapshot: Snapshot, throughput: Throughput, now: datetime, policy: Policy,
                 half_life: float) -> None:
        self.snapshot, self.now = snapshot, now
        self.classes = [c for c in CLASSES if snapshot.exists(c)]
        self.seconds = {
            j.key: {c: throughput.seconds(c, j.iterations, j.method) for c in j.classes
                    if c in self.classes}
            for j in queued
        }
        if policy == "fifo":  # one queue, oldest first: every job belongs to the same "user"
            queued = [Waiting(j.job_id, "", j.device, "normal", j.created_at, j.iterations, j.method, j.task)
                      for j in queued]
        self.original = {j.key: j for j in queued}
        self.placed: set[str] = set()
        self.pinned: dict[str, DeviceClass] = {}  # job id -> the class its first task went to
        self.queues = {
            c: FairQueue((j for j in queued if c in self.seconds[j.key]), self.placed, half_life)
            for c in self.classes
        }
        # work only this class can do, spread over its slots: what an auto job would wait behind
        self.backlog = dict.fromkeys(self.classes, 0.0)
        for costs in self.seconds.values():
            if len(costs) == 1:
                (c, seconds), = costs.items()
                self.backlog[c] += seconds
        self.slots: dict[DeviceClass, list[_Slot]] = {}
        self.width: dict[DeviceClass, int] = {}
        self.seq = 0
        for a in [*history, *active]:
            if a.placement in self.queues:
                owner = "" if policy == "fifo" else a.owner
                self.queues[a.placement].add_use(owner, a.seconds, (a.started_at - now).total_seconds())
        for c in self.classes:
            ends = [_expected_end(a, now) for a in active if a.placement == c]
            heap = [_Slot(end, self._seq()) for end in ends]
            heap += [_Slot(0.0, self._seq()) for _ in range(snapshot.free_jobs(c))]
            heapq.heapify(heap)
            self.slots[c], self.width[c] = heap, max(1, len(heap))
        self.idle: dict[DeviceClass, list[float]] = {c: [] for c in self.classes}
        self.position = dict.fromkeys(self.classes, 0)
        self.reasons: dict[DeviceClass, str] = {}  # per class, until the snapshot books another job
        self.plan = Plan([], {})

    def run(self) -> Plan:
        while open_classes := [c for c in self.classes if self.slots[c]]:
            c = min(open_classes, key=lambda k: (self.slots[k][0].free_at, k == "cpu"))
            slot = heapq.heappop(self.slots[c])
            job = self._next(c, slot.free_at)
            if job is None:  # nobody waits for c now; the slot may yet serve a moved auto job
                self.idle[c].append(slot.free_at)
                continue
            self._place(job, c, slot.free_at)
        self._unplaced()
        return self.plan

    def _next(self, c: DeviceClass, t: float) -> Waiting | None:
        """The fair queue's next job for `c` at time t, moving auto jobs that finish sooner elsewhere."""
        queue = self.queues[c]
        while (owner := queue.next_user()) is not None:
            job = queue.head(owner)
            assert job is not None
            other = self._better_elsewhere(job, c, t)
            if other is None:
                return job
            queue.drop(job)
            self.backlog[other] += self.seconds[job.key][other]
            for free_at in self.idle[other]:  # wake a slot left idle for want of jobs
                heapq.heappush(self.slots[other], _Slot(max(free_at, t), self._seq()))
            self.idle[other].clear()
        return None

    def _better_elsewhere(self, job: Waiting, c: DeviceClass, t: float) -> DeviceClass | None:
        # A job's tasks share a class (one Job, one pod template): its first task's decision
        # pins it, so a later task is never moved away from where an earlier one was sent.
        pinned = self.pinned.get(job.job_id)
        if pinned is None:
            pinned = self.pinned[job.job_id] = self._earliest_finish(job, c, t) or c
        return None if pinned == c else pinned

    def _earliest_finish(self, job: Waiting, c: DeviceClass, t: float) -> DeviceClass | None:
        costs = self.seconds[job.key]
        for other in costs:
            if other == c or job.key in self.queues[other].moved:
                continue
            heap = self.slots[other]
            free_at = min([s.free_at for s in heap[:1]] + self.idle[other] or [float("inf")])
            start = max(t, free_at) + self.backlog[other] / self.width[other]
            if start + costs[other] < t + costs[c]:
                return other
        return None

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    def _place(self, job: Waiting, c: DeviceClass, t: float) -> None:
        seconds = self.seconds[job.key][c]
        self.placed.add(job.key)  # the other class's queue skips it from now on
        if len(self.seconds[job.key]) == 1 or any(job.key in q.moved for q in self.queues.values()):
            self.backlog[c] -= seconds  # it was counted as work only c could do
        self.queues[c].add_use(job.owner, seconds, t)
        heapq.heappush(self.slots[c], _Slot(t + seconds, self._seq()))
        if t <= 0.0 and self.snapshot.take(c):
            self.plan.admit.append((self.original[job.key], c))
            self.reasons.pop(c, None)
            return
        self.position[c] += 1
        ahead = self.position[c] - 1
        if c not in self.reasons:
            self.reasons[c] = f"waiting for {NOUN[c]}: {self.snapshot.reason(c)}"
        start = self.now + timedelta(seconds=t)
        self.plan.waiting[job.key] = Estimate(
            c, self.position[c], start, start + timedelta(seconds=seconds),
            f"{self.reasons[c]}; {ahead} job{'' if ahead == 1 else 's'} ahead",
        )

    def _unplaced(self) -> None:
        """Jobs the replay could not place: their class has no slot at all (no GPU exists any
        more, or others filled the quota and none of ours runs there to free one)."""
        for key, job in self.original.items():
            if key in self.placed:
                continue
            c = next((k for k in job.classes if k in self.classes), job.classes[0])
            why = self.snapshot.reason(c) if c in self.classes else self.snapshot.missing(c)
            self.plan.waiting[key] = Estimate(c, None, None, None, f"waiting for {NOUN[c]}: {why}")


def plan(queued: Iterable[Waiting], active: Iterable[Admitted], snapshot: Snapshot,
         throughput: Throughput, now: datetime, *, history: Iterable[Admitted] = (),
         policy: Policy = "fair", half_life: float = HALF_LIFE) -> Plan:
    """Who starts now and where (`admit`), and an estimate for every job that waits.

    `active` hold slots now; `history` are recently finished jobs, which count towards their
    users' use only (decayed from when they were admitted).
    """
    return _Replay(list(queued), list(active), list(history), snapshot, throughput, now, policy,
                   half_life).run()
