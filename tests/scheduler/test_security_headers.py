"""Pages and static files come with a Content-Security-Policy that allows only the service's own
files, cannot be framed, are not type-sniffed and send no Referer; and no redirect is built from
the Host header (an open redirect)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

PAGES = ["/", "/web/app.js", "/web/style.css", "/web/favicon.svg", "/docs", "/redoc",
         "/docs-assets/swagger-ui.css"]


def directives(policy: str) -> dict[str, list[str]]:
    found = {}
    for part in policy.split(";"):
        name, *values = part.split()
        found[name] = values
    return found


@pytest.mark.parametrize("path", [*PAGES, "/healthz", "/jobs"])
def test_every_answer_has_the_security_headers(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code in (200, 401), answer.text
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    policy = directives(answer.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert policy["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy.get("script-src", []) and "'unsafe-eval'" not in str(policy)
    assert not [v for values in policy.values() for v in values if v.startswith(("http", "*"))]


def test_the_explorer_may_load_only_its_own_files(client: TestClient) -> None:
    policy = directives(client.get("/").headers["content-security-policy"])
    assert "script-src" not in policy and "style-src" not in policy  # 'self' only, from default-src
    assert policy["img-src"] == ["'self'", "blob:", "data:"]  # results are shown from blob: URLs


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_a_docs_page_allows_exactly_its_own_inline_script(client: TestClient, path: str) -> None:
    answer = client.get(path)
    inline = re.findall(rb"<script>(.*?)</script>", answer.content, re.S)
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in inline]
    assert directives(answer.headers["content-security-policy"])["script-src"] == ["'self'", *hashes]
    assert len(inline) == (1 if path == "/docs" else 0)


@pytest.mark.parametrize("path", ["/jobs/", "/auth/me/", "/events/", "/docs/", "/web", "/healthz/"])
def test_no_redirect_goes_where_the_host_header_says(client: TestClient, path: str) -> None:
    answer = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert "evil.example" not in answer.headers.get("location", ""), answer.headers
    assert answer.status_code == 404 and answer.json()["detail"].startswith(f"There is no {path}")
