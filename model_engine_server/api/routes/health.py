"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from model_engine_server.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"description": "The database and the task broker answer."},
        503: {"description": "Not ready: `checks` says which dependency is unreachable and why."},
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when every dependency answers a round trip (the database and the task broker)."""
    checks: dict[str, str] = {}
    for name, dependency in services.health.items():
        try:
            await dependency.check()
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks[name] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
