from __future__ import annotations

import httpx


async def test_health_ready_metrics_and_openapi(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    metrics = await gateway.get("/metrics")
    assert metrics.status_code == 200
    assert "python_info" in metrics.text
    schema = (await gateway.get("/openapi.json")).json()
    assert "/v1/llm/model-endpoints" in schema["paths"]
