"""The web explorer: `GET /` and its static files under `/web/` (plain HTML, CSS and ES
modules; nothing is loaded from outside the service)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def explorer() -> FileResponse:
    """The explorer's page."""
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    # a mount under its own prefix, not at "/": unknown API paths keep their JSON 404s
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
