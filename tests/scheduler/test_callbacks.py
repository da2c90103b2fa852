"""One callback attempt: the SSRF guard (submit and send time), the connection pinned to the
address that was checked, how each answer is classified, and the signature; against respx."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from typing import Any

import httpx
import pytest
import respx

from scheduler import webhooks
from scheduler.callbacks import CallbackRefused, Outcome, check_callback_url, pinned, post_once, resolve

HOOK = "https://hooks.example.com/fractal"
DOCUMENT = {"job_id": "job-123", "status": "succeeded", "params": {"width": 48}, "error": None}
PUBLIC_IP = "93.184.215.14"
LOOKUPS: list[str] = []

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No network here: *.example.com resolves to a public address, names in the dict as given."""
    table: dict[str, str] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        LOOKUPS.append(host)
        address = table.get(host) or (PUBLIC_IP if str(host).endswith("example.com") else None)
        if address is None:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def attempt(route_setup: Any, url: str = HOOK, allow_private: bool = False) -> tuple[Outcome, respx.Route]:
    """One post_once() under respx.mock; route_setup(router) returns the route to inspect."""

    async def run() -> tuple[Outcome, respx.Route]:
        with respx.mock(assert_all_called=False) as router:
            route = route_setup(router)
            async with httpx.AsyncClient() as client:
                outcome = await post_once(
                    client, url, BODY, {"X-Test": "1"}, allow_private=allow_private, timeout=2.0
                )
            return outcome, route

    return asyncio.run(run())


BODY = json.dumps(DOCUMENT).encode()
PINNED = f"https://{PUBLIC_IP}/fractal"  # HOOK with the checked address in place of the name


# --- one attempt ----------------------------------------------------------------------------------


def test_connects_to_the_address_it_checked_keeping_host_and_sni() -> None:
    LOOKUPS.clear()
    outcome, route = attempt(lambda r: r.post(PINNED).respond(204))
    assert outcome == Outcome(True, False, None)
    request = route.calls.last.request
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"  # TLS: SNI and certificate name
    assert request.content == BODY and request.headers["x-test"] == "1"
    assert LOOKUPS == ["hooks.example.com"]  # resolved once: httpx never asks DNS again


def test_a_name_that_rebinds_to_loopback_is_never_reached(fake_dns: dict[str, str]) -> None:
    """DNS may answer public for the check and 127.0.0.1 for the connection; the connection
    goes to the checked address, so the second answer is never asked for."""
    answers = iter([PUBLIC_IP, "127.0.0.1"])
    real = socket.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "rebind.example.org":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), int(port)))]
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = rebinding  # type: ignore[assignment]  (undone by the autouse fixture)

    def setup(router: respx.MockRouter) -> respx.Route:
        router.post("http://127.0.0.1/hook").respond(200)
        return router.post(f"http://{PUBLIC_IP}/hook").respond(200)

    outcome, route = attempt(setup, url="http://rebind.example.org/hook")
    assert outcome.delivered and route.calls.last.request.headers["host"] == "rebind.example.org"
    assert next(answers) == "127.0.0.1"  # the rebinding answer was never used


def test_pinned_keeps_port_path_and_brackets_ipv6() -> None:
    target = pinned("https://hooks.example.com:8443/a/b?c=1", ipaddress.ip_address("2001:db8::1"))
    assert target.url == "https://[2001:db8::1]:8443/a/b?c=1"
    assert target.host == "hooks.example.com:8443" and target.sni == "hooks.example.com"


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([httpx.Response(200)], Outcome(True, False, None)),
        ([httpx.Response(500)], Outcome(False, True, "HTTP 500")),
        ([httpx.Response(503)], Outcome(False, True, "HTTP 503")),
        ([httpx.Response(429)], Outcome(False, True, "HTTP 429")),
        ([httpx.Response(404)], Outcome(False, False, "HTTP 404")),
        ([httpx.ConnectError("refused")], Outcome(False, True, "ConnectError: refused")),
        ([httpx.ReadTimeout("slow")], Outcome(False, True, "ReadTimeout: slow")),
    ],
)
def test_each_answer_is_classified(answers: list[Any], expected: Outcome) -> None:
    outcome, route = attempt(lambda r: r.post(PINNED).mock(side_effect=answers))
    assert outcome == expected and route.call_count == 1


def test_redirects_are_not_followed() -> None:
    def setup(router: respx.MockRouter) -> respx.Route:
        router.get("http://127.0.0.1/admin").respond(200)
        router.post("http://127.0.0.1/admin").respond(200)
        return router.post(PINNED).respond(302, headers={"Location": "http://127.0.0.1/admin"})

    outcome, route = attempt(setup)
    assert (
        not outcome.delivered and not outcome.retry and "redirects are not followed" in (outcome.reason or "")
    )
    assert route.call_count == 1


def test_send_time_refusal_sends_nothing(fake_dns: dict[str, str]) -> None:
    fake_dns["evil.example.org"] = "127.0.0.1"
    outcome, route = attempt(
        lambda r: r.post("https://127.0.0.1/hook").respond(200), url="https://evil.example.org/hook"
    )
    assert not outcome.delivered and not outcome.retry
    assert "CALLBACK_ALLOW_PRIVATE" in (outcome.reason or "")
    assert route.call_count == 0


def test_a_name_that_does_not_resolve_is_retried() -> None:
    outcome, _route = attempt(lambda r: r.post(PINNED).respond(200), url="https://no-such-host.invalid/hook")
    assert not outcome.delivered and outcome.retry


def test_allow_private_reaches_localhost() -> None:
    outcome, route = attempt(
        lambda r: r.post(url__regex=r"http://(127\.0\.0\.1|\[::1\]):9000/hook").respond(200),
        url="http://localhost:9000/hook",
        allow_private=True,
    )
    assert outcome.delivered and route.calls.last.request.headers["host"] == "localhost:9000"


def test_signature_is_standard_webhooks() -> None:
    """The example of the Standard Webhooks reference libraries."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sent = webhooks.headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sent["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sent["webhook-id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek" and sent["webhook-timestamp"] == "1614265330"


# --- the guard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "https:///no-host",
        "https://user:pass@example.com/hook",
        "https://user@example.com/hook",
        "http://127.0.0.1/hook",
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://localhost:8000/hook",
        "http://api.localhost/hook",
        "https://example.com/" + "a" * 2048,
        "https://example.com:99999/hook",
        "https://exa mple.com/hook",
    ],
)
def test_check_refuses(url: str) -> None:
    with pytest.raises(CallbackRefused) as info:
        check_callback_url(url, allow_private=False)
    assert str(info.value).endswith(".")


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "http://hooks.example.com:8080/x?y=1", "https://8.8.8.8/hook"]
)
def test_check_accepts_public(url: str) -> None:
    check_callback_url(url, allow_private=False)


def test_allow_private_accepts_loopback_but_keeps_the_rest() -> None:
    check_callback_url("http://127.0.0.1:9000/hook", allow_private=True)
    check_callback_url("http://localhost/hook", allow_private=True)
    with pytest.raises(CallbackRefused):
        check_callback_url("ftp://127.0.0.1/", allow_private=True)
    with pytest.raises(CallbackRefused):
        check_callback_url("http://u:p@127.0.0.1/", allow_private=True)


def test_resolve_refuses_localhost() -> None:
    with pytest.raises(CallbackRefused, match="CALLBACK_ALLOW_PRIVATE"):
        asyncio.run(resolve("localhost", 80, allow_private=False))


def test_resolve_refuses_public_looking_name_pointing_inside(fake_dns: dict[str, str]) -> None:
    fake_dns["innocent.example.net"] = "127.0.0.1"
    with pytest.raises(CallbackRefused, match="127.0.0.1"):
        asyncio.run(resolve("innocent.example.net", 443, allow_private=False))
    fake_dns["metadata.example.net"] = "169.254.169.254"
    with pytest.raises(CallbackRefused):
        asyncio.run(resolve("metadata.example.net", 80, allow_private=False))


def test_resolve_gives_the_checked_address() -> None:
    assert str(asyncio.run(resolve("hooks.example.com", 443, allow_private=False))) == PUBLIC_IP
    assert str(asyncio.run(resolve("127.0.0.1", 80, allow_private=True))) == "127.0.0.1"
