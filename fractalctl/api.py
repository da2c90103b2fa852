"""The HTTP API as Python calls: one method per operation, errors as exceptions with the
server's sentence."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from fractalctl.sse import Event, parse_events, split_lines

USER_AGENT = "fractalctl"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# an SSE stream is quiet between changes; the server's keep-alive comments come far more often
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=120.0)


class ApiError(Exception):
    """The server answered with an error status; `detail` is its sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Unreachable(Exception):
    """No answer from the server (refused, timed out, not HTTP)."""


def error_detail(response: httpx.Response) -> str:
    """The API's `{"detail": "<a sentence>"}`, or a sentence made from the status line."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    if detail:  # e.g. FastAPI's list of validation errors
        return str(detail)
    return f"The server answered {response.status_code} {response.reason_phrase}."


def save(response: httpx.Response, path: Path) -> None:
    """The streamed body into `path`; an error answer raises ApiError with its sentence."""
    if response.is_error:
        response.read()
        raise ApiError(response.status_code, error_detail(response))
    with path.open("wb") as f:
        for chunk in response.iter_bytes():
            f.write(chunk)


class Api:
    """A signed-in (or anonymous) session with one server."""

    def __init__(self, server: str, token: str | None = None, transport: httpx.BaseTransport | None = None):
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=TIMEOUT, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"Cannot reach {self.server}: {exc or type(exc).__name__}.") from exc
        if response.is_error:
            raise ApiError(response.status_code, error_detail(response))
        return response

    # --- auth -------------------------------------------------------------------------------

    def sign_up(self, username: str, password: str) -> dict[str, Any]:
        return self.request("POST", "/auth/sign-up", json={"username": username, "password": password}).json()

    def sign_in(self, username: str, password: str) -> dict[str, Any]:
        return self.request("POST", "/auth/sign-in", json={"username": username, "password": password}).json()

    # --- jobs -------------------------------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/jobs", json=body).json()

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        timeout = httpx.Timeout(wait + 30.0, connect=5.0)
        return self.request("GET", f"/jobs/{job_id}", params=params, timeout=timeout).json()

    def jobs(self, status: str | None = None, limit: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"status": status, "limit": limit}.items() if v is not None}
        return self.request("GET", "/jobs", params=params).json()

    def logs(self, job_id: str) -> str:
        return self.request("GET", f"/jobs/{job_id}/logs").text

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{job_id}/cancel").json()

    def retry(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/jobs/{job_id}/retry").json()

    def delete(self, job_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/jobs/{job_id}").json()

    def reachable(self) -> None:
        """Raises Unreachable unless the server answers (its liveness probe)."""
        self.request("GET", "/healthz")

    def download(self, job_id: str, out: Path, file: str = "image.png") -> int:
        """Save the job's PNG (or `file`) to `out` (written beside it, then renamed: never a half
        file). Straight from S3 where the server offers a presigned URL (a 307), else through it."""
        part = out.with_name(out.name + ".part")
        params = {"file": file, "redirect": "true"}
        try:
            with self.http.stream("GET", f"/jobs/{job_id}/result", params=params) as response:
                if response.status_code == 307:  # the URL carries its own signature: no token goes there
                    direct = httpx.Client(timeout=TIMEOUT, headers={"User-Agent": USER_AGENT})
                    with direct, direct.stream("GET", response.headers["location"]) as moved:
                        save(moved, part)
                else:
                    save(response, part)
            part.replace(out)
        except httpx.TransportError as exc:
            raise Unreachable(f"Cannot reach {self.server}: {exc or type(exc).__name__}.") from exc
        finally:
            part.unlink(missing_ok=True)
        return out.stat().st_size

    @contextmanager
    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Iterator[Event]]:
        """The job's Server-Sent Events, as parsed events; resumes after `last_event_id`."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            with self.http.stream(
                "GET", f"/jobs/{job_id}/events", headers=headers, timeout=STREAM_TIMEOUT
            ) as response:
                if response.is_error:
                    response.read()
                    raise ApiError(response.status_code, error_detail(response))
                yield parse_events(split_lines(response.iter_text()))
        except httpx.TransportError as exc:
            reason = exc or type(exc).__name__
            raise Unreachable(f"Lost the event stream from {self.server}: {reason}.") from exc
