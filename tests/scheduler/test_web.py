"""The explorer's files as the service serves them: `/` and `/web/`, beside the API's own paths."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from scheduler.api.routes.web import WEB_DIR


def test_the_page_and_its_modules_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for testid in ("username", "password", "sign-in", "sign-up", "view", "gallery"):
        assert f'data-testid="{testid}"' in page.text
    assert client.head("/").status_code == 200
    script = client.get("/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_every_file_the_page_names_is_there(client: TestClient) -> None:
    """Each `/web/...` in the page and each module import resolves: nothing is loaded from elsewhere."""
    names = set(re.findall(r'"/web/([\w.-]+)"', (WEB_DIR / "index.html").read_text()))
    for module in WEB_DIR.glob("*.js"):
        names |= set(re.findall(r'from "\./([\w.-]+)"', module.read_text()))
        assert "http://" not in module.read_text() and "https://" not in module.read_text(), module
    assert {"app.js", "style.css", "api.js", "view.js"} <= names
    for name in names:
        assert client.get(f"/web/{name}").status_code == 200, name


def test_the_api_keeps_its_paths_and_json_errors(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert "/" not in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    missing = client.post("/no-such-path")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "There is no /no-such-path; the API is described at /docs."}
    assert client.get("/web/no-such-file.js").status_code == 404
    assert client.get("/web/../main.py").status_code == 404
