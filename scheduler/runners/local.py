"""LocalRunner: one `python -m job_image` subprocess per task, on this host.

The process gets exactly the environment a pod gets (docs/design.md, "The job contract") plus only
what a process needs to run here, so a local run exercises the code path the cluster runs; a
render array's task also gets its `JOB_COMPLETION_INDEX`, as an Indexed Job's pod does. Status comes from the
process itself: `progress N%` lines on stdout, its last stderr line as the error, and its exit
code. A task that fails is started again in its slot up to JOB_BACKOFF_LIMIT times; exit 2
(invalid parameters, the same for every task) fails the whole job at once and stops its other
tasks, as the Job's podFailurePolicy does on Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from job_image.storage import Storage, StorageError
from scheduler.admission.capacity import Snapshot, local_snapshot
from scheduler.admission.throughput import DeviceClass
from scheduler.core.config import Settings
from scheduler.runners.base import JobSpec, Report, RunnerUnavailable, StatusReport

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]  # holds job_image/: the job's cwd and PYTHONPATH
CANCEL_GRACE_SECONDS = 5.0  # SIGTERM -> SIGKILL on cancel and timeout
CANCELLED_KEPT = 10_000  # ids of cancelled jobs remembered (see LocalRunner._cancelled)
STOP_GRACE_SECONDS = 2.0  # the same at shutdown and for leftovers: a restart should be quick
LINE_LIMIT = 1 << 20  # longest output line read whole; longer ones are split
# Host variables a process needs to run here (OpenCL loaders and drivers read theirs); nothing
# else of the API's environment (JWT_SECRET, DATABASE_URL, ...) reaches the job.
HOST_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OCL_ICD_VENDORS", "CUDA_VISIBLE_DEVICES")
HOST_PREFIXES = ("POCL_", "PYOPENCL_")
RESTARTED = "the service restarted; the job will run again"
_PROGRESS = re.compile(r"progress (\d{1,3})%")
_TASK_KEY = re.compile(r"[0-9a-f]{32}(-[0-9]{1,9})?")  # keys become file names: nothing else is accepted
INVALID_PARAMS = 2  # the job contract's exit code: every task would fail alike, so none is retried


def task_key(job_id: str, index: int, total: int) -> str:
    """A task's name for its pid and log files: the job id for a one-task job, `<id>-<i>` else."""
    return job_id if total == 1 else f"{job_id}-{index}"


def job_environment(spec: JobSpec, settings: Settings, host_env: Mapping[str, str],
                    index: int = 0) -> dict[str, str]:
    """The job contract's variables and the task's index, plus the few host variables a process
    needs on this host."""
    env = {k: v for k, v in host_env.items() if k in HOST_VARS or k.startswith(HOST_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env.update(spec.env(settings, opencl_cache_dir=str(Path(settings.opencl_cache_dir or "").resolve())))
    env.update(settings.storage_env())
    if spec.total > 1:  # a render array's task, as an Indexed Job's pod (a plain job's line names no task)
        env["JOB_COMPLETION_INDEX"] = str(index)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@functools.cache  # asked once per process: the hardware does not change under a running service
def count_gpus() -> int:
    """The OpenCL GPU devices on this host: one local GPU job each (docs/design.md, "Scheduling")."""
    import pyopencl as cl  # loads the ICDs: only when a local runner is made, not on import

    from job_image import device

    return sum(1 for _, devices in device.inventory() for d in devices if d.type & cl.device_type.GPU)


def parse_progress(line: str) -> float | None:
    """`progress 42%` -> 0.42; anything else -> None."""
    match = _PROGRESS.fullmatch(line.strip())
    return int(match.group(1)) / 100 if match and int(match.group(1)) <= 100 else None


def describe_exit(code: int) -> str:
    """The error of a job that failed without saying why on stderr."""
    if code < 0:
        try:
            return f"the job was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"the job was killed by signal {-code}"
    return f"the job exited with code {code} and printed no error"


def is_job_process(pid: int, job_id: str) -> bool:
    """True only when `pid` is alive and runs this job (a recycled pid is someone else's)."""
    if pid <= 1:  # 0 would signal our own group
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()  # empty for a zombie
    except OSError:  # gone, another user's, or no /proc: cannot be verified
        return False
    return f"JOB_ID={job_id}".encode() in environ.split(b"\0")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Jobs run in their own process group (start_new_session), so helpers they spawn go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LocalView:
    """The local runner's capacity as settings and the host fix it (see base.RunnerView)."""

    max_concurrent: int
    gpus: int

    def snapshot(self, in_use: Mapping[DeviceClass, int]) -> Snapshot:
        return local_snapshot(max_concurrent=self.max_concurrent, gpus=self.gpus, in_use=in_use)


@dataclass
class _Running:
    """One live task process and what has been read from it."""

    spec: JobSpec
    index: int
    attempt: int  # 1 = the task's first try
    process: asyncio.subprocess.Process
    log_file: IO[str]
    started_at: datetime
    task: asyncio.Task[None] | None = None
    # why we ended it: "cancelled", "timeout", "shutdown", or "abandoned" (another task failed the job)
    stopping: str | None = None
    progress: float | None = None
    last_error: str | None = None  # the last non-empty stderr line: the job's own reason

    @property
    def key(self) -> str:
        return task_key(self.spec.job_id, self.index, self.spec.total)


class LocalRunner:
    name = "local"
    per_replica = True

    def __init__(self, settings: Settings, report: Report, storage: Storage) -> None:
        self.settings = settings
        self.report = report
        self.storage = storage
        self.data_dir = Path(settings.data_dir)
        self.gpus = settings.local_gpus if settings.local_gpus is not None else count_gpus()
        self.jobs: dict[str, _Running] = {}  # task key -> live process: each holds a slot of its class
        # Exited, their log not yet saved nor their end reported: a DELETE now must wait for
        # that, or the late job.log would land under a prefix that was just removed.
        self.finishing: dict[str, _Running] = {}
        # Spawns and cancels take turns: a cancel then sees every process a submit (or a retry)
        # started before it, and no task of a job it cancelled is spawned after it (the
        # dispatcher may hand over tasks it admitted just before the cancel). Ids are kept for
        # the last CANCELLED_KEPT cancels: a late submit comes within seconds.
        self._spawning = asyncio.Lock()
        self._cancelled: dict[str, None] = {}

    def _python(self) -> str:
        return self.settings.job_python or sys.executable

    def _pid_path(self, key: str) -> Path:
        return self.data_dir / "local-jobs" / f"{key}.pid"

    def _log_path(self, key: str) -> Path:
        if not _TASK_KEY.fullmatch(key):
            raise ValueError(f"invalid job id {key!r}")
        return self.data_dir / "logs" / f"{key}.log"

    def _log_paths(self, job_id: str) -> list[Path]:
        """The job's log files: its own, or its tasks' in index order."""
        one = self._log_path(job_id)
        tasks = sorted(one.parent.glob(f"{job_id}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        return [one] if one.exists() else tasks

    def _tasks_of(self, job_id: str) -> list[_Running]:
        return [r for r in (*self.jobs.values(), *self.finishing.values()) if r.spec.job_id == job_id]

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, active: list[JobSpec]) -> None:
        """End processes left from before a restart (they cannot be followed again: their
        pipes went with the old service), then give every active job back to the queue."""
        pid_dir = self.data_dir / "local-jobs"
        for pid_file in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []:
            if pid_file.stem not in self.jobs:
                await self._end_leftover(pid_file.stem.split("-")[0], pid_file)
        for spec in active:
            if not self._tasks_of(spec.job_id):
                log.info("job %s: re-queued after a restart", spec.job_id)
                await self._emit(StatusReport(spec.job_id, "queued", message=RESTARTED))

    async def _end_leftover(self, job_id: str, pid_file: Path) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if is_job_process(pid, job_id):
            log.warning("job %s: stopping its leftover process %d", job_id, pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                _signal_group(pid, sig)
                deadline = asyncio.get_running_loop().time() + STOP_GRACE_SECONDS
                while is_job_process(pid, job_id) and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                if not is_job_process(pid, job_id):
                    break
        elif pid:
            log.info("job %s: process %d is gone or is not this job; left alone", job_id, pid)
        pid_file.unlink(missing_ok=True)

    async def stop(self) -> None:
        """End every job process without reporting: the next start re-queues them."""
        jobs = list(self.jobs.values())
        if jobs:  # e.g. Ctrl-C: say what is stopped, and that it is not lost
            log.warning(
                "service stopping: ending %d running job(s) (%s); they run again at the next start",
                len(jobs),
                ", ".join(j.key for j in jobs),
            )
        for job in jobs:
            job.stopping = "shutdown"
        await asyncio.gather(*(self._terminate(j, STOP_GRACE_SECONDS) for j in jobs), return_exceptions=True)
        await asyncio.gather(*(j.task for j in jobs if j.task), return_exceptions=True)

    # --- the Runner interface -----------------------------------------------------------------

    def live(self) -> set[str]:
        """The jobs this runner follows: a task running, or ended with its end not yet reported."""
        return {r.spec.job_id for r in (*self.jobs.values(), *self.finishing.values())}

    def slots(self, placement: DeviceClass) -> int:
        return self.gpus if placement == "gpu" else self.settings.local_max_concurrent

    def capacity(self, placement: DeviceClass = "cpu") -> int:
        """Free slots of a class among this runner's own processes."""
        busy = sum(1 for job in self.jobs.values() if job.spec.placement == placement)
        return max(0, self.slots(placement) - busy)

    def view(self) -> LocalView:
        return LocalView(self.settings.local_max_concurrent, self.gpus)

    async def submit(self, job: JobSpec) -> None:
        """Spawn the job's tasks `job.tasks`; RunnerUnavailable keeps them queued when their
        class has too few free slots or spawning fails (tasks already spawned then stay)."""
        new = [i for i in job.tasks if task_key(job.job_id, i, job.total) not in self.jobs]
        if len(new) < len(job.tasks):
            log.warning("job %s: tasks submitted while already running; those are ignored", job.job_id)
        if self.capacity(job.placement) < len(new):
            slots = self.slots(job.placement)
            raise RunnerUnavailable(f"all {slots} local {job.placement} job slots are busy")
        async with self._spawning:
            for index in new:
                if job.job_id in self._cancelled:
                    log.info("job %s: cancelled; its task %d is not started", job.job_id, index)
                    return
                await self._spawn(job, index, attempt=1)

    async def _spawn(self, job: JobSpec, index: int, *, attempt: int) -> None:
        key = task_key(job.job_id, index, job.total)
        log_path, pid_path = self._log_path(key), self._pid_path(key)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            pid_path.parent.mkdir(parents=True, exist_ok=True)
            # line-buffered: live logs; a retry appends, so every try's output stays
            log_file = log_path.open("w" if attempt == 1 else "a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise RunnerUnavailable(f"the job's log file cannot be written: {exc}") from exc
        try:
            process = await asyncio.create_subprocess_exec(
                self._python(), "-m", "job_image",
                cwd=REPO_ROOT, env=job_environment(job, self.settings, os.environ, index),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT,
            )
        except OSError as exc:
            log_file.close()
            raise RunnerUnavailable(f"the job process could not be started: {exc}") from exc
        running = self.jobs[key] = _Running(job, index, attempt, process, log_file, _now())
        try:
            pid_path.write_text(f"{process.pid}\n")
        except OSError as exc:  # only a restart needs it; the job itself is fine
            log.warning("job %s: pid file not written: %s", key, exc)
        log.info("job %s: started as process %d (try %d)", key, process.pid, attempt)
        running.task = asyncio.create_task(self._supervise(running), name=f"local-job-{key}")

    async def cancel(self, job_id: str) -> None:
        """Stop every task's process group and return once their ends have been reported
        (`cancelled`, or what a task ended with when it had already exited)."""
        async with self._spawning:
            self._cancelled[job_id] = None
            if len(self._cancelled) > CANCELLED_KEPT:
                del self._cancelled[next(iter(self._cancelled))]
            tasks = self._tasks_of(job_id)
            for task in tasks:
                if task.key in self.jobs:
                    task.stopping = task.stopping or "cancelled"
                    log.info("job %s: cancelling process %d", task.key, task.process.pid)
        await asyncio.gather(*(self._terminate(t, CANCEL_GRACE_SECONDS) for t in tasks if t.key in self.jobs))
        # a cancelled caller must not cancel the reports
        await asyncio.shield(asyncio.gather(*(t.task for t in tasks if t.task is not None)))

    async def logs(self, job_id: str) -> str | None:
        """The local log files (a task's after another's), live and after the end, until
        forget() removes them."""
        def read() -> str | None:
            texts = []
            for path in self._log_paths(job_id):
                with contextlib.suppress(OSError):
                    texts.append(path.read_text("utf-8", "replace"))
            return "".join(texts) if texts else None

        try:
            return await asyncio.to_thread(read)
        except ValueError:
            return None

    def forget(self, job_id: str) -> None:
        """Delete the job's local logs (the job was deleted)."""
        with contextlib.suppress(ValueError):
            for path in self._log_paths(job_id):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    async def check(self) -> None:
        """Raise a sentence when no job could run: no interpreter, or nowhere to write logs."""
        if shutil.which(self._python()) is None:
            raise RuntimeError(f"the job interpreter {self._python()} does not exist or is not executable")
        for folder in (self.data_dir / "logs", self.data_dir / "local-jobs"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RuntimeError(f"the folder {folder} cannot be created: {exc.strerror or exc}") from exc
            if not os.access(folder, os.W_OK | os.X_OK):
                raise RuntimeError(f"the folder {folder} is not writable")

    # --- one process ----------------------------------------------------------------------------

    async def _supervise(self, job: _Running) -> None:
        """Follow one process from start to exit, then try it again, or save its log and
        report its end. The end is reported whatever becomes of the log (a full disk fails its
        writes and its close)."""
        job_id, process, timeout = job.key, job.process, self.settings.job_timeout_seconds
        await self._emit(StatusReport(job.spec.job_id, "running", task=job.index, started_at=job.started_at,
                                      attempts=job.attempt))
        readers = asyncio.gather(
            self._pump(job, process.stdout, is_stderr=False), self._pump(job, process.stderr, is_stderr=True),
            return_exceptions=True,  # a reader's failure must not cost the exit
        )
        try:
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                if job.stopping is None:
                    job.stopping = "timeout"
                    log.warning("job %s: ran longer than %d s; stopping it", job_id, timeout)
                await self._terminate(job, CANCEL_GRACE_SECONDS)
            _signal_group(process.pid, signal.SIGKILL)  # whatever it left behind in its group
            await readers
        finally:
            if process.returncode is None:  # this task was cancelled: never leave a process behind
                _signal_group(process.pid, signal.SIGKILL)
            readers.cancel()
            with contextlib.suppress(OSError, ValueError):  # flushing what a full disk refused
                job.log_file.close()
            with contextlib.suppress(OSError):  # a read-only or full disk must not lose the end
                self._pid_path(job_id).unlink(missing_ok=True)
            self.jobs.pop(job_id, None)  # the slot is free before the end is reported
        if job.stopping == "shutdown":
            return
        if self._retries(job):
            log.warning("job %s: try %d failed (%s); trying again", job_id, job.attempt,
                        job.last_error or describe_exit(process.returncode or 0))
            try:  # in the slot it just left (no other spawn can take it: they wait for the lock)
                async with self._spawning:
                    if job.spec.job_id not in self._cancelled:
                        await self._spawn(job.spec, job.index, attempt=job.attempt + 1)
                        return
                    job.stopping = "cancelled"  # cancelled while it was between tries
            except RunnerUnavailable as exc:
                job.last_error = f"the task could not be tried again: {exc}"
        if process.returncode == INVALID_PARAMS and job.spec.total > 1 and job.stopping is None:
            await self._abandon(job)
        self.finishing[job_id] = job
        try:
            await self._finish(job)
        finally:
            del self.finishing[job_id]

    def _retries(self, job: _Running) -> bool:
        """Whether a task that just ended is tried again: it failed by itself (not stopped, not
        for bad parameters) and has tries left."""
        failed = job.stopping is None and job.process.returncode not in (0, INVALID_PARAMS)
        return failed and job.attempt <= self.settings.job_backoff_limit

    async def _abandon(self, failed: _Running) -> None:
        """Invalid parameters fail every task alike: stop the job's other tasks, reporting nothing
        for them (the job's failure, reported after this, ends them all)."""
        others = [t for t in self._tasks_of(failed.spec.job_id) if t is not failed and t.key in self.jobs]
        for other in others:
            other.stopping = "abandoned"
        await asyncio.gather(*(self._terminate(t, CANCEL_GRACE_SECONDS) for t in others))

    async def _finish(self, job: _Running) -> None:
        """Save the log beside the result and report how the process ended."""
        job_id, process, timeout = job.spec.job_id, job.process, self.settings.job_timeout_seconds
        code = process.returncode
        end = StatusReport(job_id, "succeeded", task=job.index, finished_at=_now(), attempts=job.attempt)
        if job.stopping == "cancelled":
            end = replace(end, status="cancelled")
        elif job.stopping == "timeout":
            error = f"the job ran longer than {timeout} seconds and was stopped"
            end = replace(end, status="failed", error=error)
        elif code != 0:
            end = replace(end, status="failed", error=job.last_error or describe_exit(code))
            if code == INVALID_PARAMS and job.spec.total > 1:
                end = replace(end, task=None)  # the whole job, as the podFailurePolicy's FailJob
        await self._save_log(job)  # a cancelled job keeps its log too (DELETE removes it)
        log.info("job %s: %s (exit code %s)", job.key, end.status, code)
        if job.stopping != "abandoned":
            await self._emit(end)

    async def _pump(self, job: _Running, stream: asyncio.StreamReader | None, *, is_stderr: bool) -> None:
        """Copy one pipe to the log file line by line, noting progress and the last error."""
        while stream is not None:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over LINE_LIMIT; the rest of it arrives as the next line
                continue
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with contextlib.suppress(OSError, ValueError):  # a full disk must not stop the job
                job.log_file.write(line + "\n")
            if is_stderr:
                job.last_error = line.strip() or job.last_error
            elif (progress := parse_progress(line)) is not None and progress != job.progress:
                job.progress = progress
                await self._emit(StatusReport(job.spec.job_id, "running", task=job.index, progress=progress))

    async def _terminate(self, job: _Running, grace: float) -> None:
        """SIGTERM the job's group; SIGKILL it if it has not exited after `grace` seconds."""
        if job.process.returncode is not None:
            return
        _signal_group(job.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(job.process.wait(), grace)
        except TimeoutError:
            log.warning("job %s: still running %s s after SIGTERM; killing it", job.key, grace)
            _signal_group(job.process.pid, signal.SIGKILL)
            await job.process.wait()

    async def _save_log(self, job: _Running) -> None:
        """`<prefix>job.log` beside the result (a task's: `parts/<i>.log`), so the log outlives
        the local file."""
        name = "job.log" if job.spec.total == 1 else f"parts/{job.index}.log"
        key = f"{job.spec.result_prefix}{name}"
        try:
            data = await asyncio.to_thread(self._log_path(job.key).read_bytes)
            await asyncio.to_thread(self.storage.put_bytes, key, data, "text/plain; charset=utf-8")
        except (OSError, ValueError, StorageError) as exc:
            log.warning("job %s: log not saved as %s: %s", job.key, key, exc)

    async def _emit(self, report: StatusReport) -> None:
        try:
            await self.report(report)
        except Exception:  # a failing tracker must not stop following the process
            log.exception("job %s: report %s failed", report.job_id, report.status)
