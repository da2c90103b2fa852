"""LocalRunner: one `python -m job_image` subprocess per job, on this host.

The process gets exactly the environment a pod gets (docs/design.md, "The job contract") plus only
what a process needs to run here, so a local run exercises the code path the cluster runs.
Status comes from the process itself: `progress N%` lines on stdout, its last stderr line as
the error, and its exit code.
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
from dataclasses import dataclass
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
STOP_GRACE_SECONDS = 2.0  # the same at shutdown and for leftovers: a restart should be quick
LINE_LIMIT = 1 << 20  # longest output line read whole; longer ones are split
# Host variables a process needs to run here (OpenCL loaders and drivers read theirs); nothing
# else of the API's environment (JWT_SECRET, DATABASE_URL, ...) reaches the job.
HOST_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OCL_ICD_VENDORS", "CUDA_VISIBLE_DEVICES")
HOST_PREFIXES = ("POCL_", "PYOPENCL_")
RESTARTED = "the service restarted; the job will run again"
_PROGRESS = re.compile(r"progress (\d{1,3})%")
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # ids become file names: nothing else is accepted


def job_environment(spec: JobSpec, settings: Settings, host_env: Mapping[str, str]) -> dict[str, str]:
    """The job contract's variables plus the few host variables a process needs on this host."""
    env = {k: v for k, v in host_env.items() if k in HOST_VARS or k.startswith(HOST_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env.update(spec.env(settings, opencl_cache_dir=str(Path(settings.opencl_cache_dir or "").resolve())))
    env.update(settings.storage_env())
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
    """One live job process and what has been read from it."""

    spec: JobSpec
    process: asyncio.subprocess.Process
    log_file: IO[str]
    started_at: datetime
    task: asyncio.Task[None] | None = None
    stopping: str | None = None  # why we ended it: "cancelled", "timeout" or "shutdown"
    progress: float | None = None
    last_error: str | None = None  # the last non-empty stderr line: the job's own reason


class LocalRunner:
    name = "local"
    per_replica = True

    def __init__(self, settings: Settings, report: Report, storage: Storage) -> None:
        self.settings = settings
        self.report = report
        self.storage = storage
        self.data_dir = Path(settings.data_dir)
        self.gpus = settings.local_gpus if settings.local_gpus is not None else count_gpus()
        self.jobs: dict[str, _Running] = {}  # live processes: each holds a slot of its class
        # Exited, their log not yet saved nor their end reported: a DELETE now must wait for
        # that, or the late job.log would land under a prefix that was just removed.
        self.finishing: dict[str, _Running] = {}

    def _python(self) -> str:
        return self.settings.job_python or sys.executable

    def _pid_path(self, job_id: str) -> Path:
        return self.data_dir / "local-jobs" / f"{job_id}.pid"

    def _log_path(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return self.data_dir / "logs" / f"{job_id}.log"

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, active: list[JobSpec]) -> None:
        """End processes left from before a restart (they cannot be followed again: their
        pipes went with the old service), then give every active job back to the queue."""
        pid_dir = self.data_dir / "local-jobs"
        for pid_file in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []:
            if pid_file.stem not in self.jobs:
                await self._end_leftover(pid_file.stem, pid_file)
        for spec in active:
            if spec.job_id not in self.jobs:
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
                ", ".join(j.spec.job_id for j in jobs),
            )
        for job in jobs:
            job.stopping = "shutdown"
        await asyncio.gather(*(self._terminate(j, STOP_GRACE_SECONDS) for j in jobs), return_exceptions=True)
        await asyncio.gather(*(j.task for j in jobs if j.task), return_exceptions=True)

    # --- the Runner interface -----------------------------------------------------------------

    def live(self) -> set[str]:
        """The jobs this runner follows: running, or ended with their end not yet reported."""
        return set(self.jobs) | set(self.finishing)

    def slots(self, placement: DeviceClass) -> int:
        return self.gpus if placement == "gpu" else self.settings.local_max_concurrent

    def capacity(self, placement: DeviceClass = "cpu") -> int:
        """Free slots of a class among this runner's own processes."""
        busy = sum(1 for job in self.jobs.values() if job.spec.placement == placement)
        return max(0, self.slots(placement) - busy)

    def view(self) -> LocalView:
        return LocalView(self.settings.local_max_concurrent, self.gpus)

    async def submit(self, job: JobSpec) -> None:
        """Spawn the job; RunnerUnavailable keeps it queued when no slot is free or spawning fails."""
        if job.job_id in self.jobs:
            log.warning("job %s: submitted while already running; ignored", job.job_id)
            return
        if self.capacity(job.placement) <= 0:
            slots = self.slots(job.placement)
            raise RunnerUnavailable(f"all {slots} local {job.placement} job slots are busy")
        log_path, pid_path = self._log_path(job.job_id), self._pid_path(job.job_id)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            pid_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = log_path.open("w", encoding="utf-8", buffering=1)  # line-buffered: live logs
        except OSError as exc:
            raise RunnerUnavailable(f"the job's log file cannot be written: {exc}") from exc
        try:
            process = await asyncio.create_subprocess_exec(
                self._python(), "-m", "job_image",
                cwd=REPO_ROOT, env=job_environment(job, self.settings, os.environ),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT,
            )
        except OSError as exc:
            log_file.close()
            raise RunnerUnavailable(f"the job process could not be started: {exc}") from exc
        running = self.jobs[job.job_id] = _Running(job, process, log_file, _now())
        try:
            pid_path.write_text(f"{process.pid}\n")
        except OSError as exc:  # only a restart needs it; the job itself is fine
            log.warning("job %s: pid file not written: %s", job.job_id, exc)
        log.info("job %s: started as process %d", job.job_id, process.pid)
        running.task = asyncio.create_task(self._supervise(running), name=f"local-job-{job.job_id}")

    async def cancel(self, job_id: str) -> None:
        """Stop the process group and return once its end has been reported (`cancelled`,
        or what it ended with when it had already exited)."""
        job = self.jobs.get(job_id) or self.finishing.get(job_id)
        if job is None:
            return
        if job_id in self.jobs:
            job.stopping = "cancelled"
            log.info("job %s: cancelling process %d", job_id, job.process.pid)
            await self._terminate(job, CANCEL_GRACE_SECONDS)
        if job.task is not None:
            await asyncio.shield(job.task)  # a cancelled caller must not cancel the report

    async def logs(self, job_id: str) -> str | None:
        """The local log file, live and after the end, until forget() removes it."""
        try:
            return await asyncio.to_thread(self._log_path(job_id).read_text, "utf-8", "replace")
        except (OSError, ValueError):
            return None

    def forget(self, job_id: str) -> None:
        """Delete the job's local log (the job was deleted)."""
        with contextlib.suppress(OSError, ValueError):
            self._log_path(job_id).unlink(missing_ok=True)

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
        """Follow one process from start to exit, then save its log and report its end. The end
        is reported whatever becomes of the log (a full disk fails its writes and its close)."""
        job_id, process, timeout = job.spec.job_id, job.process, self.settings.job_timeout_seconds
        await self._emit(StatusReport(job_id, "running", started_at=job.started_at))
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
        self.finishing[job_id] = job
        try:
            await self._finish(job)
        finally:
            del self.finishing[job_id]

    async def _finish(self, job: _Running) -> None:
        """Save the log beside the result and report how the process ended."""
        job_id, process, timeout = job.spec.job_id, job.process, self.settings.job_timeout_seconds
        code = process.returncode
        end = StatusReport(job_id, "succeeded", finished_at=_now())
        if job.stopping == "cancelled":
            end = StatusReport(job_id, "cancelled", finished_at=end.finished_at)
        elif job.stopping == "timeout":
            error = f"the job ran longer than {timeout} seconds and was stopped"
            end = StatusReport(job_id, "failed", finished_at=end.finished_at, error=error)
        elif code != 0:
            error = job.last_error or describe_exit(code)
            end = StatusReport(job_id, "failed", finished_at=end.finished_at, error=error)
        await self._save_log(job)  # a cancelled job keeps its log too (DELETE removes it)
        log.info("job %s: %s (exit code %s)", job_id, end.status, code)
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
                await self._emit(StatusReport(job.spec.job_id, "running", progress=progress))

    async def _terminate(self, job: _Running, grace: float) -> None:
        """SIGTERM the job's group; SIGKILL it if it has not exited after `grace` seconds."""
        if job.process.returncode is not None:
            return
        _signal_group(job.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(job.process.wait(), grace)
        except TimeoutError:
            log.warning("job %s: still running %s s after SIGTERM; killing it", job.spec.job_id, grace)
            _signal_group(job.process.pid, signal.SIGKILL)
            await job.process.wait()

    async def _save_log(self, job: _Running) -> None:
        """`<prefix>job.log` beside the result, so the log outlives the local file."""
        key = f"{job.spec.result_prefix}job.log"
        try:
            data = await asyncio.to_thread(self._log_path(job.spec.job_id).read_bytes)
            await asyncio.to_thread(self.storage.put_bytes, key, data, "text/plain; charset=utf-8")
        except (OSError, ValueError, StorageError) as exc:
            log.warning("job %s: log not saved as %s: %s", job.spec.job_id, key, exc)

    async def _emit(self, report: StatusReport) -> None:
        try:
            await self.report(report)
        except Exception:  # a failing tracker must not stop following the process
            log.exception("job %s: report %s failed", report.job_id, report.status)
