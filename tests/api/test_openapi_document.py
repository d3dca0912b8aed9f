"""The OpenAPI document declares every status each kind of route can answer, with the error schema of its kind,
never FastAPI's 422, and carries the validation rules the server enforces (the fuzzing run checks the server
against it; this checks the document itself, at unit-test speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_engine_server.api.app import create_app
from model_engine_server.api.completion_schemas import MAX_STOP_SEQUENCES
from model_engine_server.config import Settings
from model_engine_server.domain import rules
from tests.fakes import FakeResolver

OPENAI_PATHS = {"/v1/chat/completions", "/v2/chat/completions", "/v1/completions", "/v2/completions"}
OPENAI_PATHS |= {"/v1/models", "/v1/models/{model}"}
ADMIN_CHECKED = {"/v1/api-keys", "/v1/api-keys/{key_id}", "/v1/tenants/{tenant}/limits", "/v1/usage"}
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}


def _document(tmp_path: Path) -> dict[str, Any]:
    return create_app(Settings(data_dir=tmp_path), resolver=FakeResolver()).openapi()


def test_every_operation_declares_its_error_statuses_with_the_error_schema(tmp_path: Path) -> None:
    document = _document(tmp_path)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            declared = {int(status) for status in responses if status != "200"}
            assert 422 not in declared, where
            expected = {400, 414, 431}  # the request limits answer these on every route
            if "requestBody" in operation:
                expected |= {408, 413}
            if path not in UNAUTHENTICATED:
                expected |= {401, 404, 429, 503}
                assert operation["security"], where
            if path in ADMIN_CHECKED:
                expected.add(403)
            if method in {"post", "put", "delete"}:
                expected.add(409)
            if method == "post":
                expected |= {502, 504}
            assert expected <= declared, (where, sorted(expected - declared))
            schema = "OpenAiError" if path in OPENAI_PATHS else "ErrorDetail"
            for status in expected:
                content = responses[str(status)]["content"]["application/json"]["schema"]
                assert content == {"$ref": f"#/components/schemas/{schema}"}, (where, status)


def test_the_document_carries_the_rules_the_server_enforces(tmp_path: Path) -> None:
    schemas = _document(tmp_path)["components"]["schemas"]
    create = schemas["CreateEndpointRequest"]["properties"]
    assert create["name"]["pattern"] == rules.NAME_PATTERN
    assert create["name"]["maxLength"] == rules.MAX_NAME_LENGTH
    assert (create["min_workers"]["minimum"], create["min_workers"]["maximum"]) == (0, rules.MAX_WORKERS_CAP)
    assert create["labels"]["maxProperties"] == rules.MAX_LABELS
    for quantity in ("cpus", "memory", "storage"):  # a string quantity or a plain number, as the client sends
        string, number, _null = create[quantity]["anyOf"]
        assert (string["pattern"], number["minimum"]) == (rules.QUANTITY_PATTERN, 0)
    completion = schemas["CompletionRequestBody"]["properties"]
    assert completion["prompt"]["minLength"] == 1
    assert completion["max_new_tokens"]["exclusiveMinimum"] == 0
    assert (completion["temperature"]["minimum"], completion["temperature"]["maximum"]) == (0, 1)
    [stop_list, _null] = completion["stop_sequences"]["anyOf"]
    assert stop_list["maxItems"] == MAX_STOP_SEQUENCES
    assert stop_list["items"]["minLength"] == 1
