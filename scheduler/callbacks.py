"""Job-end callbacks: POST the final job document to the user's `callback_url`.

A callback makes the scheduler open a connection to an address a user chose, so it is an SSRF
vector: without a guard a user could make it poke the cloud metadata endpoint, the cluster's
API server or anything else on the private network. The guard works twice:

- at submit time `check_callback_url` (pure, no DNS) refuses what is plainly not a public
  http(s) URL, so the user gets a 422 instead of a silent non-delivery;
- at send time `resolve_public` resolves the name and refuses it if any address is not global,
  since DNS can point a public-looking name at 127.0.0.1 (checked again on every attempt).

Redirects are never followed (a 302 could lead to a private address). `CALLBACK_ALLOW_PRIVATE`
switches the guard off for development and tests. Delivery runs in the background, retries
transient failures with exponential backoff and never raises: a callback is best effort and
must not disturb the job's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from job_image.backoff import Backoff
from scheduler.core.config import Settings

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
USER_AGENT = "fractal-scheduler"
MAX_BACKOFF_SECONDS = 60.0  # however many attempts are configured, never sleep longer than this at once

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(ValueError):
    """The callback URL may not be used; str(exc) is a sentence fit for the 422's detail."""


def _is_public(ip: IPAddress) -> bool:
    """True for an address anyone on the internet could reach.

    `is_global` alone is not enough: Python counts multicast (224.0.0.0/4) as global.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_global and not (
        ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified
    )


def _ip_literal(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal, including the short/decimal/hex IPv4 forms
    (`127.1`, `2130706433`, `0x7f.0.0.1`) that resolvers accept but `ipaddress` does not."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_callback_url(url: str, allow_private: bool) -> None:
    """Refuse a URL that is not a plain public http(s) target; raises CallbackRefused.

    Pure (no DNS), so it can run inside the submit request; names are re-checked at send time.
    """
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"The callback URL is longer than {MAX_URL_LENGTH} characters.")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise CallbackRefused("The callback URL contains whitespace or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise CallbackRefused(f"The callback URL is not a valid URL ({exc}).") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise CallbackRefused("The callback URL must use http or https.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise CallbackRefused("The callback URL may not contain credentials (user:password@).")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackRefused("The callback URL needs a host.")
    if port == 0:
        raise CallbackRefused("The callback URL's port may not be 0.")
    if allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise CallbackRefused("The callback URL may not point at localhost.")
    ip = _ip_literal(host)
    if ip is not None and not _is_public(ip):
        raise CallbackRefused(
            f"The callback URL's address {ip} is not public (loopback, private, link-local or reserved)."
        )


async def resolve_public(host: str, port: int) -> None:
    """Resolve `host` and refuse it unless every address is public (DNS can point anywhere).

    Raises CallbackRefused for a non-public address, OSError (socket.gaierror) when resolution
    fails, which the sender treats as transient.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} resolved to no address")
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise CallbackRefused(
                f"The callback host {host} resolved to an odd address {address!r}."
            ) from exc
        if not _is_public(ip):
            raise CallbackRefused(
                f"The callback host {host} resolves to {ip}, which is not a public address."
            )


class CallbackSender:
    """Delivers job documents in the background; one per service.

    `client` is injectable for tests; when not given, the sender creates its own on first use
    (so a sender built outside an event loop, or never used, opens nothing) and closes it in
    `aclose`.
    """

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient | None = None, backoff_base: float = 0.5
    ) -> None:
        self.settings = settings
        self.backoff_base = backoff_base
        self._client = client
        self._owns_client = client is None
        self._tasks: set[asyncio.Task[bool]] = set()  # strong references: the loop keeps only weak ones
        self._closed = False

    # --- public -------------------------------------------------------------------------------

    def send(self, url: str, document: dict[str, Any]) -> None:
        """Schedule delivery and return at once; must be called from within the event loop."""
        job_id = document.get("job_id", "?")
        if self._closed:
            log.warning("callback for job %s dropped: the sender is shut down", job_id)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.error("callback for job %s dropped: send() called outside the event loop", job_id)
            return
        task = loop.create_task(self.deliver(url, document), name=f"callback-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, url: str, document: dict[str, Any]) -> bool:
        """POST `document` to `url` until a 2xx, a final refusal or the attempts run out.

        Returns whether it was delivered; never raises (except cancellation).
        """
        job_id = str(document.get("job_id", "?"))
        attempts = max(1, self.settings.callback_attempts)
        try:
            body = json.dumps(document, default=str).encode()
        except (TypeError, ValueError) as exc:
            log.error("callback for job %s not sent: the document is not JSON (%s)", job_id, exc)
            return False
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if "job_id" in document:
            headers["X-Fractal-Job-Id"] = job_id
        backoff = Backoff(self.backoff_base, MAX_BACKOFF_SECONDS, jitter=0.1)  # jitter: endings spread out
        for attempt in range(attempts):
            retry, reason = await self._attempt(url, body, headers)
            if reason is None:
                log.info("callback for job %s delivered to %s (attempt %d)", job_id, url, attempt + 1)
                return True
            last = attempt + 1 == attempts
            log.warning(
                "callback for job %s to %s failed (attempt %d of %d): %s",
                job_id,
                url,
                attempt + 1,
                attempts,
                reason,
            )
            if not retry or last:
                break
            await asyncio.sleep(backoff.next())
        log.error("callback for job %s to %s given up", job_id, url)
        return False

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give pending deliveries `timeout` seconds, cancel the rest, close an owned client."""
        self._closed = True
        pending = set(self._tasks)
        if pending:
            _done, still = await asyncio.wait(pending, timeout=timeout)
            if still:
                log.warning("cancelling %d callbacks still pending at shutdown", len(still))
                for task in still:
                    task.cancel()
                await asyncio.gather(*still, return_exceptions=True)
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- internals --------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self.settings.callback_timeout)
        return self._client

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
        """One POST. Returns (retryable, reason); reason None means delivered."""
        allow_private = self.settings.callback_allow_private
        timeout = self.settings.callback_timeout
        try:
            check_callback_url(url, allow_private)  # settings may have tightened since submit
            async with asyncio.timeout(timeout * 2):  # bounds DNS + a server dripping its headers
                if not allow_private:
                    parts = urlsplit(url)
                    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
                    await resolve_public((parts.hostname or "").rstrip("."), port)
                # streamed so the receiver's response body is never read into memory
                async with self._http().stream(
                    "POST", url, content=body, headers=headers, timeout=timeout, follow_redirects=False
                ) as response:
                    status = response.status_code
        except CallbackRefused as exc:
            return False, str(exc)
        except (httpx.TransportError, TimeoutError, OSError) as exc:
            return True, f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:  # an invalid URL, a bug: give up rather than crash the task
            return False, f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return False, None
        if status == 429 or status >= 500:
            return True, f"HTTP {status}"
        if 300 <= status < 400:
            return False, f"HTTP {status} (redirects are not followed)"
        return False, f"HTTP {status}"
