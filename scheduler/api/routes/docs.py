"""`/docs` (Swagger UI) and `/redoc` (ReDoc) with their assets served by the service itself, so
they work with no internet access. The assets are the pinned `fastapi-offline` package's copies
of the Swagger UI and ReDoc bundles (the package itself is not used: FastAPI's own page
builders are, pointed at these files)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from scheduler.api.headers import CSP, docs_policy

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
PREFIX = "/docs-assets"

router = APIRouter(include_in_schema=False)


def _title(request: Request) -> str:
    return f"{request.app.title} API"


def with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers[CSP] = docs_policy(bytes(page.body))
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=_title(request),
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon.png",
    )
    return with_policy(page)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=_title(request),
        redoc_js_url=f"{PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{PREFIX}/favicon.png",
        with_google_fonts=False,
    )
    return with_policy(page)


def install(app: FastAPI) -> None:
    """Serve the pages and their assets; create the app with `docs_url=None, redoc_url=None`."""
    app.include_router(router)
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
