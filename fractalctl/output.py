"""What people read: plain aligned tables (as kubectl prints them) and one job's details.
Pure functions of the API's documents; `-o json` bypasses all of this."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

LIST_COLUMNS = ("JOB ID", "STATUS", "KIND", "SIZE", "ZOOM", "PROGRESS", "AGE")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def age(value: str | None, now: datetime | None = None) -> str:
    """`42s`, `5m`, `3h`, `2d`: the coarse age kubectl shows."""
    then = parse_time(value)
    if then is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in (headers, *rows)]
    return "\n".join(lines)


def progress_text(job: dict[str, Any]) -> str:
    """`37%` while running, `#2 in queue` while queued (when the server says), else `-`."""
    if job["status"] == "queued" and job.get("queue_position"):
        return f"#{job['queue_position']} in queue"
    if job.get("progress") is not None and job["status"] in ("running", "succeeded"):
        return f"{round(job['progress'] * 100)}%"
    return "-"


def job_row(job: dict[str, Any], now: datetime | None = None) -> list[str]:
    p = job.get("params", {})
    return [
        job["job_id"],
        job["status"],
        p.get("kind", "-"),
        f"{p.get('width', '?')}x{p.get('height', '?')}",
        _zoom(p.get("zoom", 1)),
        progress_text(job),
        age(job.get("created_at"), now),
    ]


def jobs_table(jobs: Sequence[dict[str, Any]], now: datetime | None = None) -> str:
    return table(LIST_COLUMNS, [job_row(job, now) for job in jobs])


def job_details(job: dict[str, Any]) -> str:
    """`kubectl describe`-like `Key: value` lines; fields the server does not send are left out."""
    p = job.get("params", {})
    fields: list[tuple[str, Any]] = [
        ("Job ID", job["job_id"]),
        ("Status", job["status"]),
        ("Error", job.get("error")),
        ("Message", job.get("message")),
        ("Progress", progress_text(job) if job.get("progress") is not None else None),
        ("Tasks", _tasks(job)),
        ("Failed tasks", ", ".join(map(str, job["failed_tasks"])) if job.get("failed_tasks") else None),
        ("Video", _video(job.get("animation"))),
        ("Kind", p.get("kind")),
        ("Size", f"{p.get('width')}x{p.get('height')}" + _supersample(p)),
        ("Center", _center(p)),
        ("Zoom", _zoom(p["zoom"]) if "zoom" in p else None),
        ("Max iter", p.get("max_iter")),
        ("Colormap", p.get("colormap")),
        ("Precision", p.get("precision")),
        ("Device", p.get("device")),
        ("Priority", job.get("priority")),
        ("Placement", job.get("placement")),
        ("Queue position", job.get("queue_position")),
        ("Estimated iterations", _thousands(job.get("estimated_iterations"))),
        ("Estimated start", job.get("estimated_start_at")),
        ("Estimated finish", job.get("estimated_finish_at")),
        ("Created", job.get("created_at")),
        ("Started", job.get("started_at")),
        ("Finished", job.get("finished_at")),
        ("Callback", _callback(job.get("callback"), job.get("callback_url"))),
    ]
    shown = [(k, v) for k, v in fields if v not in (None, "")]
    width = max(len(k) for k, _ in shown) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in shown)


def _tasks(job: dict[str, Any]) -> str | None:
    """`12 of 16 succeeded, 2 running, 2 queued` for a render array; nothing for one task."""
    t = job.get("tasks") or {}
    if t.get("total", 1) <= 1:
        return None
    rest = [f"{t[k]} {k}" for k in ("running", "queued", "failed") if t.get(k)]
    return ", ".join([f"{t.get('succeeded', 0)} of {t['total']} succeeded", *rest])


def _video(animation: dict[str, Any] | None) -> str | None:
    if not animation:
        return None
    return (f"{animation['frames']} frames to zoom {_zoom(animation['zoom_to'])}, "
            f"{animation.get('fps', 30)} fps, {animation.get('format', 'mp4')}")


def _thousands(n: int | None) -> str | None:
    return f"{n:,}" if n is not None else None


def _zoom(zoom: float | str) -> str:
    """A zoom sent as a JSON number or (deep zoom) a decimal string, e.g. '64' or '1e+300'."""
    return format(Decimal(zoom), ".6g") if isinstance(zoom, str) else f"{zoom:g}"


def _center(params: dict[str, Any]) -> str | None:
    """Every digit: enough to zoom on (a decimal string as the server keeps it, a float's 17)."""
    if "center_x" not in params or "center_y" not in params:
        return None
    x, y = (v if isinstance(v, str) else f"{v:.17g}" for v in (params["center_x"], params["center_y"]))
    return f"{x}, {y}"


def _supersample(params: dict[str, Any]) -> str:
    n = params.get("supersample", 1)
    return f" ({n}x{n} samples per pixel)" if n and n > 1 else ""


def _callback(callback: dict[str, Any] | None, url: str | None) -> str | None:
    if not callback:
        return url
    text = f"{callback.get('url')} ({callback.get('state')}, {callback.get('attempts', 0)} attempts)"
    return text + (f": {callback['last_error']}" if callback.get("last_error") else "")
