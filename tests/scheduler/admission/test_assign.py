"""The assignment: fair share between users, priority within one, auto placement, estimates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.admission.assign import Admitted, Plan, plan
from scheduler.admission.capacity import local_snapshot
from scheduler.admission.queue import Waiting
from scheduler.admission.throughput import Throughput

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SECOND = 5e9  # iterations: one second of CPU render at the prior rate


def job(job_id: str, owner: str, age: float, *, device: str = "cpu", priority: str = "normal",
        iterations: float = SECOND) -> Waiting:
    return Waiting(job_id, owner, device, priority, NOW - timedelta(seconds=age), iterations)  # type: ignore[arg-type]


def run(queued: list[Waiting], active: list[Admitted] = (), *, cpu: int = 1, gpu: int = 0,
        policy: str = "fair") -> Plan:
    in_use = {c: sum(a.placement == c for a in active) for c in ("cpu", "gpu")}
    snap = local_snapshot(max_concurrent=cpu, gpus=gpu, in_use=in_use)
    return plan(queued, active, snap, Throughput(), NOW, policy=policy)  # type: ignore[arg-type]


def order(p: Plan, device_class: str = "cpu") -> list[str]:
    """Admitted first, then the waiting jobs of the class by queue position."""
    admitted = [w.job_id for w, c in p.admit if c == device_class]
    waiting = sorted((e.position, jid) for jid, e in p.waiting.items() if e.placement == device_class)
    return admitted + [jid for _, jid in waiting]


def test_one_users_six_jobs_do_not_hold_back_anothers_single_job() -> None:
    queued = [job(f"a{i}", "alice", age=100 - i) for i in range(6)] + [job("b", "bob", age=1)]
    assert order(run(queued, policy="fifo")) == ["a0", "a1", "a2", "a3", "a4", "a5", "b"]
    fair = order(run(queued))
    assert fair.index("b") <= 1  # alice's oldest may go first (she waited longest), then bob
    assert fair.index("b") == 1


def test_user_with_less_use_goes_first() -> None:
    running = [Admitted("r", "alice", "cpu", NOW, seconds=60)]
    queued = [job("a", "alice", age=50), job("b", "bob", age=1)]
    p = run(queued, running, cpu=2)
    assert [w.job_id for w, _ in p.admit] == ["b"]


def test_with_one_slot_the_user_whose_long_job_just_ended_goes_after_one_who_had_none() -> None:
    """Admitted a minute ago, twelve half-lives: it weighs little, but more than nothing."""
    ended = [Admitted("a0", "alice", "cpu", NOW - timedelta(seconds=60), seconds=60)]
    queued = [job("a1", "alice", age=90), job("b", "bob", age=1)]
    p = plan(queued, [], local_snapshot(max_concurrent=1, gpus=0, in_use={}), Throughput(), NOW,
             history=ended, half_life=5.0)
    assert [w.job_id for w, _ in p.admit] == ["b"]


def test_use_is_weighted_by_cost() -> None:
    """Carol's one long job outweighs Dave's three short ones: Dave keeps getting slots."""
    running = [Admitted("c0", "carol", "cpu", NOW, seconds=600)] + [
        Admitted(f"d{i}", "dave", "cpu", NOW, seconds=2) for i in range(3)
    ]
    queued = [job("c1", "carol", age=90), job("d3", "dave", age=1)]
    p = run(queued, running, cpu=5)
    assert [w.job_id for w, _ in p.admit] == ["d3"]


def test_priority_orders_a_users_own_jobs() -> None:
    queued = [job("low", "alice", 30, priority="low"), job("old", "alice", 20),
              job("new", "alice", 10), job("high", "alice", 1, priority="high")]
    assert order(run(queued)) == ["high", "old", "new", "low"]


def test_priority_never_overtakes_another_user() -> None:
    """Bob's high-priority job does not jump Alice's turn: users alternate whatever the priority."""
    queued = [job("a0", "alice", 50), job("a1", "alice", 49),
              job("b0", "bob", 10, priority="high"), job("b1", "bob", 9, priority="high")]
    assert order(run(queued)) == ["a0", "b0", "a1", "b1"]


def test_queue_positions_and_estimates_are_ordered() -> None:
    queued = [job(f"j{i}", f"u{i % 3}", age=100 - i, iterations=SECOND * (1 + i % 4)) for i in range(12)]
    p = run(queued, cpu=2)
    assert len(p.admit) == 2 and len(p.waiting) == 10
    waiting = sorted(p.waiting.values(), key=lambda e: e.position or 0)
    assert [e.position for e in waiting] == list(range(1, 11))
    starts = [e.start for e in waiting]
    assert all(s is not None and s >= NOW for s in starts) and starts == sorted(starts)
    assert all(e.finish is not None and e.start is not None and e.finish > e.start for e in waiting)
    assert waiting[0].message == "waiting for a CPU slot: 2 of 2 in use; 0 jobs ahead"
    assert waiting[3].message == "waiting for a CPU slot: 2 of 2 in use; 3 jobs ahead"


def test_gpu_jobs_wait_for_a_gpu() -> None:
    running = [Admitted("g0", "x", "gpu", NOW, 10), Admitted("g1", "y", "gpu", NOW, 10)]
    queued = [job(f"q{i}", "z", age=5 - i, device="gpu") for i in range(4)]
    p = run(queued, running, gpu=2)
    assert p.admit == []
    assert p.waiting["q3"].message == "waiting for a GPU: 2 of 2 in use; 3 jobs ahead"
    assert p.waiting["q0"].start == NOW + timedelta(seconds=10)


def test_a_job_past_its_estimate_is_expected_to_run_as_long_again() -> None:
    """Its successor's start is ahead, not "now" (which reads null a moment later)."""
    late = [Admitted("g0", "x", "gpu", NOW - timedelta(seconds=40), 10)]  # 30 s over
    p = run([job("q", "z", age=5, device="gpu")], late, gpu=1)
    assert p.waiting["q"].start == NOW + timedelta(seconds=30)


def test_auto_takes_the_earliest_finish() -> None:
    heavy = 100 * SECOND  # 100 s on the CPU, ~13 s on the GPU (prior rates and start-ups)
    p = run([job("big", "alice", 2, device="auto", iterations=heavy)], cpu=1, gpu=1)
    assert [(w.job_id, c) for w, c in p.admit] == [("big", "gpu")]
    # the GPU is busy for a minute: the CPU finishes a small job sooner
    busy = [Admitted("g", "bob", "gpu", NOW, 60)]
    p = run([job("small", "alice", 2, device="auto", iterations=SECOND)], busy, cpu=1, gpu=1)
    assert [(w.job_id, c) for w, c in p.admit] == [("small", "cpu")]


def test_auto_waits_where_it_will_finish_first() -> None:
    busy = [Admitted("c", "bob", "cpu", NOW, 600), Admitted("g", "bob", "gpu", NOW, 5)]
    p = run([job("a", "alice", 1, device="auto")], busy, cpu=1, gpu=1)
    assert p.admit == [] and p.waiting["a"].placement == "gpu" and p.waiting["a"].position == 1


def test_class_that_does_not_exist() -> None:
    p = run([job("g", "alice", 1, device="gpu"), job("a", "alice", 1, device="auto")], gpu=0)
    assert p.waiting["g"].placement == "gpu" and p.waiting["g"].start is None
    assert p.waiting["g"].message == (
        "waiting for a GPU: LOCAL_GPUS (default: the OpenCL GPU devices found) is 0"
    )
    assert [(w.job_id, c) for w, c in p.admit] == [("a", "cpu")]


def test_ten_thousand_queued() -> None:
    queued = [job(f"j{i}", f"u{i % 50}", age=i, device=("cpu", "gpu", "auto")[i % 3]) for i in range(10_000)]
    p = run(queued, cpu=8, gpu=2)
    assert len(p.admit) == 10 and len(p.waiting) == 9_990
    assert all(e.position is not None for e in p.waiting.values())


def array(job_id: str, owner: str, age: float, tasks: int, *, device: str = "cpu") -> list[Waiting]:
    """A render array's queued tasks, as the dispatcher hands them to the plan."""
    return [Waiting(job_id, owner, device, "normal", NOW - timedelta(seconds=age), SECOND, task=i)  # type: ignore[arg-type]
            for i in range(tasks)]


def test_a_256_task_array_does_not_hold_back_light_users() -> None:
    """Tasks are the unit of fair share: alice's array, queued first, takes turns with the
    single jobs of ten others; each of them starts within the first few slots, as without it."""
    singles = [job(f"u{i}", f"user{i}", age=10 - i * 0.1) for i in range(10)]
    queued = array("big", "alice", 100, 256) + singles
    p = run(queued, cpu=2)
    assert [(w.job_id, w.task) for w, _ in p.admit] == [("big", 0), ("u0", 0)]
    starts = {k: e.position for k, e in p.waiting.items() if not k.startswith("big")}
    alone = run(singles, cpu=2)
    alone_starts = {k: e.position for k, e in alone.waiting.items()}
    assert max(starts.values()) <= max(alone_starts.values()) + 1  # one more ahead at most: alice's first
    assert len([k for k in p.waiting if k.startswith("big")]) == 255


def test_an_auto_arrays_tasks_share_one_class() -> None:
    p = run(array("x", "alice", 10, 4, device="auto"), cpu=2, gpu=2)
    assert {c for _, c in p.admit} | {e.placement for e in p.waiting.values()} == {p.admit[0][1]}
