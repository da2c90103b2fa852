"""Following a job to its end: the server's event stream (or its long-poll, on a server without
one), shown as a progress bar on a terminal and as plain lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO

from rich import progress as bar
from rich.console import Console

from fractalctl.api import Api, ApiError, Unreachable
from fractalctl.output import parse_time

FINISHED = ("succeeded", "failed", "cancelled")
RECONNECTS = 5  # stream losses in a row before giving up (each resumes with Last-Event-ID)
POLL_WAIT = 1.0  # seconds per long-poll on a server without an event stream


class Display(Protocol):
    def update(self, job: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def describe(job: dict[str, Any]) -> str:
    """`queued: #2 in queue, starts ~10:42:05` / `running` / `pending: <why it waits>`."""
    details = []
    waiting = job["status"] in ("queued", "pending")
    if job["status"] == "queued" and job.get("queue_position"):
        details.append(f"#{job['queue_position']} in queue")
    start = parse_time(job.get("estimated_start_at"))
    if job["status"] == "queued" and start:
        details.append(f"starts ~{start.astimezone().strftime('%H:%M:%S')}")
    if waiting and job.get("message"):
        details.append(job["message"])
    return f"{job['status']}: {', '.join(details)}" if details else job["status"]


class LineDisplay:
    """One line per change worth reading (status, queue place, each 10 % of progress)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: tuple[str, int] | None = None

    def update(self, job: dict[str, Any]) -> None:
        step = int((job.get("progress") or 0) * 10) if job["status"] == "running" else -1
        key = (describe(job), step)
        if key != self.last:
            self.last = key
            suffix = f" {step * 10}%" if step >= 0 else ""
            print(f"{job['job_id']} {key[0]}{suffix}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class BarDisplay:
    """A rich progress bar on the terminal's stderr."""

    def __init__(self, console: Console) -> None:
        self.progress = bar.Progress(
            bar.SpinnerColumn(),
            bar.TextColumn("{task.description}"),
            bar.BarColumn(),
            bar.TaskProgressColumn(),
            bar.TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("submitted", total=1.0)
        self.progress.start()

    def update(self, job: dict[str, Any]) -> None:
        done = 1.0 if job["status"] == "succeeded" else job.get("progress") or 0.0
        self.progress.update(self.task, completed=done, description=describe(job))

    def close(self) -> None:
        self.progress.stop()


class NoDisplay:
    def update(self, job: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def choose_display(json_output: bool, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> Display:
    """A bar where a person watches stderr; plain lines into a table-mode stdout; else nothing."""
    if stderr.isatty():
        return BarDisplay(Console(file=stderr))
    return NoDisplay() if json_output else LineDisplay(stdout)


def follow(api: Api, job: dict[str, Any], display: Display) -> dict[str, Any]:
    """Show the job's changes until it has finished; returns its final document."""
    display.update(job)
    try:
        if job["status"] not in FINISHED:
            job = _follow_events(api, job, display)
    finally:
        display.close()
    return job


def _follow_events(api: Api, job: dict[str, Any], display: Display) -> dict[str, Any]:
    last_id: str | None = None
    losses = 0  # streams in a row that were lost, or ended, before telling anything
    while True:
        try:
            with api.events(job["job_id"], last_id) as events:
                for event in events:
                    losses, last_id = 0, event.id
                    if event.event == "deleted":
                        break  # the read below answers with the server's 404
                    if event.event != "message":  # a kind this client does not know
                        continue
                    job = json.loads(event.data)
                    display.update(job)
                    if job["status"] in FINISHED:
                        return job
        except ApiError as exc:
            if exc.status not in (404, 405):
                raise
            api.job(job["job_id"])  # raises the 404 if the job itself is gone
            return _follow_polls(api, job, display)  # a server without an event stream
        except Unreachable:
            if losses >= RECONNECTS:
                raise
        # the stream ended early (the server restarted, the job was deleted): where is the job now?
        job = api.job(job["job_id"])
        display.update(job)
        if job["status"] in FINISHED:
            return job
        losses += 1
        if losses > RECONNECTS:
            raise Unreachable(f"The event stream from {api.server} keeps ending; try again later.")
        time.sleep(min(2.0**losses / 4, 5.0))


def _follow_polls(api: Api, job: dict[str, Any], display: Display) -> dict[str, Any]:
    while job["status"] not in FINISHED:
        job = api.job(job["job_id"], wait=POLL_WAIT)
        display.update(job)
    return job
