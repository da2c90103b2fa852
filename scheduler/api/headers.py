"""Security headers on every answer: the explorer and the API docs are pages a browser runs,
so they must not be framed (a click on the picture submits a job), must not have their files
read as another type, and may load nothing but their own files (the token the explorer keeps in
localStorage is what a script from elsewhere would be after).

`POLICY` fits the explorer (`/`, `/web/*`): its own scripts, styles and images, and result
PNGs shown through blob: URLs. `/docs` and `/redoc` answer with `docs_policy` of their page:
Swagger UI starts from one inline script (allowed by its hash, nothing else inline runs), both
inject styles, and ReDoc runs its search in a worker made from a blob: URL.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "Content-Security-Policy"
BASE = "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
POLICY = f"default-src 'self'; img-src 'self' blob: data:; {BASE}"
HEADERS = {
    CSP: POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # URLs carry job ids
}
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def docs_policy(page: bytes) -> str:
    """The policy of a docs page: POLICY, plus the page's own inline scripts by their hashes."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' blob: data:; worker-src 'self' blob:; {BASE}"
    )


class SecurityHeadersMiddleware:
    """Adds HEADERS to every HTTP answer, leaving any the route set itself (the docs' CSP)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
