"""Callbacks: the SSRF guard (submit and send time) and delivery with retries, against respx."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
import respx

from scheduler.callbacks import CallbackRefused, CallbackSender, check_callback_url, resolve_public
from scheduler.core.config import Settings

HOOK = "https://hooks.example.com/fractal"
DOCUMENT = {"job_id": "job-123", "status": "succeeded", "params": {"width": 48}, "error": None}
PUBLIC_IP = "93.184.215.14"

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No network here: *.example.com resolves to a public address, names in the dict as given."""
    table: dict[str, str] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        address = table.get(host) or (PUBLIC_IP if str(host).endswith("example.com") else None)
        if address is None:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"callback_attempts": 4, "callback_timeout": 2.0, "jwt_secret": "x" * 40}
    return Settings(**(base | overrides))


def deliver(route_setup: Any, url: str = HOOK, **overrides: Any) -> tuple[bool, respx.Route]:
    """Run one deliver() under respx.mock; route_setup(router) returns the route to inspect."""

    async def run() -> tuple[bool, respx.Route]:
        with respx.mock(assert_all_called=False) as router:
            route = route_setup(router)
            async with httpx.AsyncClient() as client:
                sender = CallbackSender(make_settings(**overrides), client=client, backoff_base=0.001)
                ok = await sender.deliver(url, DOCUMENT)
                await sender.aclose()
            return ok, route

    return asyncio.run(run())


# --- delivery -----------------------------------------------------------------------------------


def test_delivers_the_document_as_json_with_headers() -> None:
    ok, route = deliver(lambda r: r.post(HOOK).respond(204))
    assert ok
    assert route.call_count == 1
    request = route.calls.last.request
    assert json.loads(request.content) == DOCUMENT
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "fractal-scheduler"
    assert request.headers["x-fractal-job-id"] == "job-123"


def test_retries_5xx_then_succeeds() -> None:
    ok, route = deliver(
        lambda r: r.post(HOOK).mock(
            side_effect=[httpx.Response(500), httpx.Response(500), httpx.Response(200)]
        )
    )
    assert ok
    assert route.call_count == 3


def test_retries_429() -> None:
    ok, route = deliver(lambda r: r.post(HOOK).mock(side_effect=[httpx.Response(429), httpx.Response(201)]))
    assert ok
    assert route.call_count == 2


def test_4xx_is_final() -> None:
    ok, route = deliver(lambda r: r.post(HOOK).respond(404))
    assert not ok
    assert route.call_count == 1


def test_connect_errors_use_every_attempt_then_give_up(caplog: pytest.LogCaptureFixture) -> None:
    ok, route = deliver(
        lambda r: r.post(HOOK).mock(side_effect=httpx.ConnectError("refused")), callback_attempts=3
    )
    assert not ok
    assert route.call_count == 3
    assert "job-123" in caplog.text and "given up" in caplog.text


def test_timeouts_are_retried() -> None:
    ok, route = deliver(
        lambda r: r.post(HOOK).mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200)])
    )
    assert ok
    assert route.call_count == 2


def test_all_5xx_gives_up_after_callback_attempts() -> None:
    ok, route = deliver(lambda r: r.post(HOOK).respond(503), callback_attempts=2)
    assert not ok
    assert route.call_count == 2


def test_redirects_are_not_followed() -> None:
    def setup(router: respx.MockRouter) -> respx.Route:
        router.get("http://127.0.0.1/admin").respond(200)
        router.post("http://127.0.0.1/admin").respond(200)
        return router.post(HOOK).respond(302, headers={"Location": "http://127.0.0.1/admin"})

    ok, route = deliver(setup)
    assert not ok
    assert route.call_count == 1  # neither followed nor retried


def test_send_time_refusal_sends_nothing(fake_dns: dict[str, str]) -> None:
    fake_dns["evil.example.org"] = "127.0.0.1"
    url = "https://evil.example.org/hook"
    ok, route = deliver(lambda r: r.post(url).respond(200), url=url)
    assert not ok
    assert route.call_count == 0


def test_send_and_aclose_deliver_in_background() -> None:
    async def run() -> respx.Route:
        with respx.mock as router:
            route = router.post(HOOK).respond(200)
            sender = CallbackSender(make_settings(), backoff_base=0.001)  # owns its client
            sender.send(HOOK, DOCUMENT)
            assert route.call_count == 0  # send() returned before delivering
            await sender.aclose()
            return route

    route = asyncio.run(run())
    assert route.call_count == 1


def test_aclose_cancels_what_does_not_finish_in_time() -> None:
    async def run() -> CallbackSender:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(30)
            return httpx.Response(200)

        with respx.mock as router:
            router.post(HOOK).mock(side_effect=hang)
            sender = CallbackSender(make_settings(callback_timeout=60), backoff_base=0.001)
            sender.send(HOOK, DOCUMENT)
            await asyncio.sleep(0.01)
            await sender.aclose(timeout=0.05)
            return sender

    sender = asyncio.run(asyncio.wait_for(run(), 5))
    assert not sender._tasks


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


def test_resolve_public_refuses_localhost() -> None:
    with pytest.raises(CallbackRefused):
        asyncio.run(resolve_public("localhost", 80))


def test_resolve_public_refuses_public_looking_name_pointing_inside(fake_dns: dict[str, str]) -> None:
    fake_dns["innocent.example.net"] = "127.0.0.1"
    with pytest.raises(CallbackRefused, match="127.0.0.1"):
        asyncio.run(resolve_public("innocent.example.net", 443))
    fake_dns["metadata.example.net"] = "169.254.169.254"
    with pytest.raises(CallbackRefused):
        asyncio.run(resolve_public("metadata.example.net", 80))


def test_resolve_public_accepts_a_public_address() -> None:
    asyncio.run(resolve_public("hooks.example.com", 443))


def test_allow_private_skips_resolution() -> None:
    ok, route = deliver(
        lambda r: r.post("http://localhost:9000/hook").respond(200),
        url="http://localhost:9000/hook",
        callback_allow_private=True,
    )
    assert ok
    assert route.call_count == 1
