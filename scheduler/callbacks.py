"""Job-end callbacks, one attempt at a time: the SSRF guard and one signed POST.

A callback makes the scheduler open a connection to an address a user chose, so it is an SSRF
vector: without a guard a user could make it poke the cloud metadata endpoint, the cluster's
API server or anything else on the private network. The guard works twice:

- at submit time `check_callback_url` (pure, no DNS) refuses what is plainly not a public
  http(s) URL, so the user gets a 422 instead of a silent non-delivery;
- at send time `resolve` resolves the name once and refuses it if any address is not global,
  and the POST then connects to the address that was checked (`pinned`), keeping the name
  for the Host header, TLS SNI and the certificate check: DNS answering differently the
  second time (rebinding) cannot move the connection to 127.0.0.1.

Redirects are never followed (a 302 could lead to a private address). `CALLBACK_ALLOW_PRIVATE`
switches the address checks off for development and tests. The body is signed per Standard
Webhooks (`webhooks.py`); `deliveries.py` schedules the attempts and keeps their outcome.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
USER_AGENT = "fractal-scheduler"
ALLOW_HINT = "An operator can allow private callback addresses with CALLBACK_ALLOW_PRIVATE=true."

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
        raise CallbackRefused(f"The callback URL may not point at localhost. {ALLOW_HINT}")
    ip = _ip_literal(host)
    if ip is not None and not _is_public(ip):
        raise CallbackRefused(
            f"The callback URL's address {ip} is not public (loopback, private, link-local or reserved). "
            + ALLOW_HINT
        )


async def resolve(host: str, port: int, *, allow_private: bool) -> IPAddress:
    """Resolve `host` once; the address to connect to. Unless private addresses are allowed,
    every address must be public (DNS can point a public-looking name anywhere).

    Raises CallbackRefused for a non-public address, OSError (socket.gaierror) when resolution
    fails, which the sender treats as transient.
    """
    literal = _ip_literal(host)
    if literal is not None:
        infos = [(0, 0, 0, "", (str(literal), port))]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} resolved to no address")
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError as exc:
            raise CallbackRefused(
                f"The callback host {host} resolved to an odd address {address!r}."
            ) from exc
        if not allow_private and not _is_public(ip):
            raise CallbackRefused(
                f"The callback host {host} resolves to {ip}, which is not a public address. {ALLOW_HINT}"
            )
        found.append(ip)
    return found[0]


@dataclass(frozen=True)
class Pinned:
    """A request for `url` that connects to `ip`, the address that was checked."""

    url: str  # the URL with the address in place of the name
    host: str  # the Host header: the name (and port) the user gave
    sni: str  # the name TLS asks for and checks the certificate against


def pinned(url: str, ip: IPAddress) -> Pinned:
    parts = urlsplit(url)
    name = (parts.hostname or "").rstrip(".")
    address = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{address}:{parts.port}" if parts.port else address
    host = parts.netloc.rsplit("@", 1)[-1]
    return Pinned(urlunsplit(parts._replace(netloc=netloc)), host, name)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retry: bool  # worth another attempt (timeouts, 5xx, 429, a name that does not resolve)
    reason: str | None  # why not delivered, a phrase for `callback.last_error`


async def post_once(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float,
) -> Outcome:
    """One POST of `body` to `url`, through the guard; never raises (except cancellation)."""
    try:
        check_callback_url(url, allow_private)  # settings may have tightened since submit
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        async with asyncio.timeout(timeout * 2):  # bounds DNS + a server dripping its headers
            target = pinned(
                url, await resolve((parts.hostname or "").rstrip("."), port, allow_private=allow_private)
            )
            # streamed so the receiver's response body is never read into memory
            async with client.stream(
                "POST",
                target.url,
                content=body,
                headers={**headers, "Host": target.host},
                timeout=timeout,
                follow_redirects=False,
                extensions={"sni_hostname": target.sni},
            ) as response:
                status = response.status_code
    except CallbackRefused as exc:
        return Outcome(False, False, str(exc))
    except (httpx.TransportError, TimeoutError, OSError) as exc:
        return Outcome(False, True, f"{type(exc).__name__}: {exc}".rstrip(": "))
    except Exception as exc:  # an invalid URL, a bug: give up rather than crash the sender
        return Outcome(False, False, f"{type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return Outcome(True, False, None)
    if status == 429 or status >= 500:
        return Outcome(False, True, f"HTTP {status}")
    if 300 <= status < 400:
        return Outcome(False, False, f"HTTP {status} (redirects are not followed)")
    return Outcome(False, False, f"HTTP {status}")
