"""The FastAPI app: `create_app(settings)` wires the service and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from job_image.storage import Storage
from scheduler.api import openapi
from scheduler.api.errors import BodyLimitMiddleware, install_handlers
from scheduler.api.headers import SecurityHeadersMiddleware
from scheduler.api.routes import auth, docs, events, health, jobs, web
from scheduler.api.status_reads import StatusReads
from scheduler.core.config import Settings
from scheduler.metrics import MetricsMiddleware
from scheduler.service import Service

DESCRIPTION = """Sign up, sign in for a bearer token, ask for a fractal; the job renders it with
OpenCL (a local process or a Kubernetes Job) and the API streams the PNG back."""


def create_app(settings: Settings | None = None, storage: Storage | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings, storage)  # fails here, before serving, on a bad secret or storage config

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="fractal-scheduler",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,  # served by docs.install from local assets: they work offline
        redoc_url=None,
        redirect_slashes=False,  # Starlette builds that redirect's Location from the Host header
    )
    app.state.service = service
    install_handlers(app)
    app.include_router(auth.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(health.router)
    web.install(app)
    docs.install(app)
    openapi.install(app)
    app.add_middleware(StatusReads, service=service)  # innermost: after the body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app
