from __future__ import annotations

import httpx


async def test_health_ready_metrics_and_openapi(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/healthz")).json() == {"status": "ok"}
    ready = await app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    metrics = await app_client.get("/metrics")
    assert metrics.status_code == 200
    assert "python_info" in metrics.text
    schema = (await app_client.get("/openapi.json")).json()
    assert "/v1/llm/model-endpoints" in schema["paths"]
