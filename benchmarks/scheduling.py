"""Admission policy on a simulated cluster, in simulated time: FIFO against fair share.

    .venv/bin/python benchmarks/scheduling.py [--seed N ...] [--jobs N] [--span S ...] [--half-life S ...]

Several seeds, spans or half-lives print one line per run: both policies' fairness, slowdowns and
utilisation (over the makespan, and while jobs still arrive, which leaves out the drain: one long
render started late can decide the makespan alone), then each half-life's mean index.

Runs the real admission code (scheduler.admission: capacity snapshot, fair queue, plan) at
every event of a simulated runner with 2 GPU and 8 CPU slots. The trace: 20 users, 2000 jobs
whose costs are heavy-tailed (lognormal CPU seconds, sigma 1.5: median ~10 s, p99 ~5 min),
one user submitting bursts of 200 at once, the other 19 submitting at random (Poisson) over
the same span; 30 % of jobs ask for `gpu`, 40 % for `cpu`, 30 % `auto`. The simulated devices
are not what the cost model's priors say (CPU 4 G iter/s, GPU 30 G iter/s, start-up 1.2 s and
2.5 s): throughput is learned from the finished jobs' result documents, as in the service.
The estimates the scheduler sees are the true iterations times a lognormal error (sigma 0.25,
worse than the probe's measured error, see benchmarks/estimates.py).

Printed side by side for both policies: Jain's fairness index over the users' slowdowns, the
light users' p50 and p95 wait, utilisation per class, makespan, and the median ratio of
predicted to actual wait (for jobs that waited). Then the cost of one admission decision with
10,000 jobs queued.

A user's slowdown is the mean over their jobs of the response time (wait + run) divided by the
response time the same job gets when that user has the cluster alone (the same trace and
policy, the other users' jobs removed; at least 10 s). That is the slowdown the other users
cause (finish-time fairness, as in Themis, NSDI 2020). The plain stretch, (wait + run) / run,
is printed too: by it, the user who submits 200 jobs at once is "slowed down" by their own
burst whatever the policy, and FIFO, which makes everybody wait for that burst, looks fair.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.admission.assign import HALF_LIFE, HISTORY_HALF_LIVES, Admitted, Policy, plan  # noqa: E402
from scheduler.admission.capacity import local_snapshot  # noqa: E402
from scheduler.admission.queue import Waiting  # noqa: E402
from scheduler.admission.throughput import Throughput  # noqa: E402

SLOTS = {"cpu": 8, "gpu": 2}
TRUE_RATE = {"cpu": 4e9, "gpu": 3e10}
TRUE_STARTUP = {"cpu": 1.2, "gpu": 2.5}
USERS, BURST_USER, BURST, BURSTS = 20, "u00", 200, 3
SPAN = 4000.0  # seconds over which jobs arrive: keeps the CPUs ~89 % busy under either policy
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Job:
    waiting: Waiting
    true_iterations: float
    submit: float
    start: float | None = None
    end: float | None = None
    placement: str | None = None
    predicted_start: float | None = None


def trace(seed: int, total: int, span: float = SPAN) -> list[Job]:
    rng = random.Random(seed)
    arrivals: list[tuple[float, str]] = []
    for b in range(BURSTS):
        arrivals += [(b * span / BURSTS + 1.0, BURST_USER)] * BURST
    light = [f"u{i:02d}" for i in range(1, USERS)]
    arrivals += [(rng.uniform(0, span), rng.choice(light)) for _ in range(total - len(arrivals))]
    arrivals.sort()
    jobs = []
    for i, (t, owner) in enumerate(arrivals):
        cpu_seconds = min(rng.lognormvariate(2.3, 1.5), 3600.0)
        iterations = cpu_seconds * TRUE_RATE["cpu"]
        device = rng.choices(["gpu", "cpu", "auto"], [0.3, 0.4, 0.3])[0]
        estimate = iterations * rng.lognormvariate(0.0, 0.25)
        priority = rng.choices(["low", "normal", "high"], [0.2, 0.6, 0.2])[0]
        w = Waiting(f"j{i:05d}", owner, device, priority, EPOCH + timedelta(seconds=t), estimate)  # type: ignore[arg-type]
        jobs.append(Job(w, iterations, t))
    return jobs


def run_seconds(job: Job, c: str) -> float:
    return TRUE_STARTUP[c] + job.true_iterations / TRUE_RATE[c]


def simulate(jobs: list[Job], policy: Policy, half_life: float = HALF_LIFE) -> list[Job]:
    """Event by event: finish what ends, queue what arrives, then let admission decide."""
    jobs = [Job(j.waiting, j.true_iterations, j.submit) for j in jobs]
    arrivals = deque(jobs)
    ends: list[tuple[float, str]] = []
    by_id = {j.waiting.job_id: j for j in jobs}
    queued: dict[str, Job] = {}
    active: dict[str, Admitted] = {}
    history: deque[tuple[float, Admitted]] = deque()  # (end, job), by end
    throughput = Throughput()
    while arrivals or ends or queued:
        t = min(x for x in ([arrivals[0].submit] if arrivals else []) + ([ends[0][0]] if ends else []))
        while ends and ends[0][0] <= t:
            _, job_id = heapq.heappop(ends)
            job, admitted = by_id[job_id], active.pop(job_id)
            history.append((job.end, admitted))  # type: ignore[arg-type]
            render = job.true_iterations / TRUE_RATE[admitted.placement]
            doc = {"total_iterations": job.true_iterations, "render_seconds": render}
            throughput.learn(admitted.placement, doc, wall_seconds=job.end - job.start)  # type: ignore[operator]
        memory = HISTORY_HALF_LIVES * half_life  # as the dispatcher reads it
        while history and t - history[0][0] > memory:
            history.popleft()
        fresh = []
        while arrivals and arrivals[0].submit <= t:
            job = arrivals.popleft()
            queued[job.waiting.job_id] = job
            fresh.append(job)
        now = EPOCH + timedelta(seconds=t)
        in_use = {c: sum(a.placement == c for a in active.values()) for c in SLOTS}
        snap = local_snapshot(max_concurrent=SLOTS["cpu"], gpus=SLOTS["gpu"], in_use=in_use)
        decided = plan([j.waiting for j in queued.values()], list(active.values()), snap, throughput, now,
                       history=[a for _, a in history], policy=policy, half_life=half_life)
        for job in fresh:
            estimate = decided.waiting.get(job.waiting.job_id)
            job.predicted_start = t if estimate is None or estimate.start is None else (
                (estimate.start - EPOCH).total_seconds())
        for waiting, c in decided.admit:
            job = queued.pop(waiting.job_id)
            job.start, job.placement = t, c
            job.end = t + run_seconds(job, c)
            seconds = throughput.seconds(c, waiting.iterations)
            active[waiting.job_id] = Admitted(waiting.job_id, waiting.owner, c, now, seconds)
            heapq.heappush(ends, (job.end, waiting.job_id))
    return jobs


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def alone(jobs: list[Job], policy: Policy, half_life: float) -> dict[str, float]:
    """Each job's response time when its user has the cluster to themselves."""
    response: dict[str, float] = {}
    for owner in {j.waiting.owner for j in jobs}:
        for j in simulate([j for j in jobs if j.waiting.owner == owner], policy, half_life):
            response[j.waiting.job_id] = j.end - j.submit  # type: ignore[operator]
    return response


def busy_until(jobs: list[Job], c: str, until: float) -> float:
    """Slot-seconds of class `c` spent rendering before `until`."""
    return sum(max(0.0, min(j.end, until) - j.start) for j in jobs if j.placement == c)  # type: ignore[type-var, operator]


def figures(jobs: list[Job], solo: dict[str, float]) -> dict[str, str]:
    slow: dict[str, list[float]] = {}
    stretch: dict[str, list[float]] = {}
    for j in jobs:
        run, response = j.end - j.start, j.end - j.submit  # type: ignore[operator]
        slow.setdefault(j.waiting.owner, []).append(response / max(solo[j.waiting.job_id], 10.0))
        stretch.setdefault(j.waiting.owner, []).append(response / max(run, 10.0))
    per_user = [statistics.fmean(v) for v in slow.values()]
    plain = [statistics.fmean(v) for v in stretch.values()]
    light_waits = [j.start - j.submit for j in jobs if j.waiting.owner != BURST_USER]  # type: ignore[operator]
    first, last = min(j.submit for j in jobs), max(j.end for j in jobs)  # type: ignore[type-var]
    makespan = last - first
    busy = {c: busy_until(jobs, c, last) for c in SLOTS}
    arriving = max(j.submit for j in jobs) - first
    busy_arriving = {c: busy_until(jobs, c, first + arriving) for c in SLOTS}
    ratios = [(j.predicted_start - j.submit) / (j.start - j.submit) for j in jobs  # type: ignore[operator]
              if j.start - j.submit > 1.0]  # type: ignore[operator]
    return {
        "Jain's fairness (users' slowdowns)": f"{jain(per_user):.3f}",
        "slowdown: burst user / light users": _split(slow),
        "Jain's over plain stretch (not the goal)": f"{jain(plain):.3f}",
        "stretch: burst user / light users": _split(stretch),
        "light users' wait p50 / p95 (s)": " / ".join(f"{quantile(light_waits, q):.1f}" for q in (0.5, 0.95)),
        "utilisation cpu / gpu": " / ".join(f"{busy[c] / (SLOTS[c] * makespan):.1%}" for c in SLOTS),
        "  while jobs arrive (not the drain)": " / ".join(
            f"{busy_arriving[c] / (SLOTS[c] * arriving):.1%}" for c in SLOTS),
        "jobs on cpu / gpu": " / ".join(str(sum(j.placement == c for j in jobs)) for c in SLOTS),
        "makespan (s)": f"{makespan:.0f}",
        "median predicted / actual wait": f"{statistics.median(ratios):.2f} (n={len(ratios)})",
    }


def _split(per_user: dict[str, list[float]]) -> str:
    light = [x for user, values in per_user.items() if user != BURST_USER for x in values]
    return f"{statistics.fmean(per_user[BURST_USER]):.2f} / {statistics.fmean(light):.2f}"


def decision_cost(queued_jobs: int, seed: int) -> tuple[float, int]:
    """Seconds for one plan() over `queued_jobs` waiting jobs of 200 users, 10 slots busy."""
    rng = random.Random(seed)
    now = EPOCH + timedelta(hours=1)
    waiting = [
        Waiting(f"q{i}", f"u{rng.randrange(200)}", rng.choice(["cpu", "gpu", "auto"]), "normal",  # type: ignore[arg-type]
                now - timedelta(seconds=rng.uniform(0, 3600)), rng.lognormvariate(25, 1.5))
        for i in range(queued_jobs)
    ]
    active = [Admitted(f"a{i}", f"u{i}", "cpu" if i < 8 else "gpu", now - timedelta(seconds=5), 60.0)
              for i in range(10)]
    snap = local_snapshot(max_concurrent=8, gpus=2, in_use={"cpu": 8, "gpu": 2})
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        decided = plan(waiting, active, snap, Throughput(), now)
        best = min(best, time.perf_counter() - t0)
    return best, len(decided.waiting)


def compare(seed: int, total: int, span: float, half_life: float) -> dict[str, dict[str, str]]:
    jobs = trace(seed, total, span)
    results = {}
    for policy in ("fifo", "fair"):
        t0 = time.perf_counter()
        done = simulate(jobs, policy, half_life)  # type: ignore[arg-type]
        results[policy] = figures(done, alone(jobs, policy, half_life))  # type: ignore[arg-type]
        took = time.perf_counter() - t0
        print(f"simulated {policy}, seed {seed}, span {span:g}: {took:.1f} s", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, nargs="+", default=[1], help="several: one summary line each")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--span", type=float, nargs="+", default=[SPAN], help="seconds jobs arrive over")
    parser.add_argument("--half-life", type=float, nargs="+", default=[HALF_LIFE],
                        help="fair share's memory, seconds")
    args = parser.parse_args()
    runs = [(seed, span, h) for h in args.half_life for span in args.span for seed in args.seed]
    if len(runs) > 1:
        keys = {"Jain": "Jain's fairness (users' slowdowns)",
                "slowdown burst/light": "slowdown: burst user / light users",
                "utilisation cpu/gpu": "utilisation cpu / gpu",
                "while arriving": "  while jobs arrive (not the drain)"}
        heads = "".join(f" {name + ' FIFO':>25} {'fair':>15}" for name in keys)
        print(f"{'half-life':>9} {'span (s)':>9} {'seed':>5}{heads}")
        fair: dict[float, list[float]] = {}
        for seed, span, h in runs:
            r = compare(seed, args.jobs, span, h)
            fair.setdefault(h, []).append(float(r["fair"][keys["Jain"]]))
            columns = "".join(f" {r['fifo'][k]:>25} {r['fair'][k]:>15}" for k in keys.values())
            print(f"{h:9g} {span:9g} {seed:5d}{columns}", flush=True)
        for h, values in fair.items():
            print(f"half-life {h:g} s: fair share's index {statistics.fmean(values):.3f} on average, "
                  f"at least 0.9 in {sum(v >= 0.9 for v in values)} of {len(values)} runs")
        return
    (seed, span, h), = runs
    results = compare(seed, args.jobs, span, h)
    print(f"{args.jobs} jobs, {USERS} users ({BURST_USER} submits {BURSTS} bursts of {BURST}), "
          f"slots {SLOTS}, arriving over {span:g} s, half-life {h:g} s, seed {seed}")
    print(f"{'':46} {'FIFO':>22} {'fair share':>22}")
    for name in results["fifo"]:
        print(f"{name:46} {results['fifo'][name]:>22} {results['fair'][name]:>22}")
    seconds, estimated = decision_cost(10_000, seed)
    print(f"one admission decision with 10,000 queued: {seconds * 1000:.0f} ms per plan, "
          f"{seconds / 10_000 * 1e6:.1f} us per queued job ({estimated} estimates)", flush=True)


if __name__ == "__main__":
    main()
