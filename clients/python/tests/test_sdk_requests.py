"""Building requests without sending them: paths, bodies, auth, defaults and client-side validation."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from llmengine import LLMInferenceFramework, ModelEndpointType, PostInferenceHooks
from llmengine._core.request_specs import (
    auth_headers,
    build_url,
    completion_body,
    completion_request,
    create_endpoint_request,
    delete_endpoint_request,
    get_endpoint_request,
    hook_names,
    resolve_model,
    task_status_request,
    update_endpoint_request,
)
from llmengine.errors import ValidationError


def test_the_key_goes_both_as_basic_username_with_empty_password_and_as_x_api_key() -> None:
    headers = auth_headers("sk-123")
    assert headers["x-api-key"] == "sk-123"
    scheme, encoded = headers["authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded) == b"sk-123:"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/v1/llm/model-endpoints"),
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000/v1/llm/model-endpoints"),
        # A base path with a prefix keeps it, with or without the trailing slash.
        ("https://api.example.com/llm-engine", "https://api.example.com/llm-engine/v1/llm/model-endpoints"),
        ("https://api.example.com/llm-engine/", "https://api.example.com/llm-engine/v1/llm/model-endpoints"),
    ],
)
def test_urls_join_the_base_path(base: str, expected: str) -> None:
    assert build_url(base, "v1/llm/model-endpoints") == expected


def test_model_name_is_an_alias_of_model() -> None:
    assert resolve_model("llama", None) == "llama"
    assert resolve_model(None, "llama") == "llama"
    assert resolve_model("llama", "llama") == "llama"
    with pytest.raises(ValidationError, match="disagree"):
        resolve_model("llama", "falcon")
    with pytest.raises(ValidationError, match="model= \\(or its alias model_name=\\)"):
        resolve_model(None, None)


def test_completion_body_sends_what_was_given_and_leaves_out_what_was_not() -> None:
    body = completion_body(
        {"prompt": "Hi", "max_new_tokens": 5, "temperature": 0.0, "stop_sequences": ["\n"], "top_p": None}
    )
    assert body == {
        "prompt": "Hi",
        "max_new_tokens": 5,
        "temperature": 0.0,
        "stop_sequences": ["\n"],
        "return_token_log_probs": False,
    }


def test_extra_completion_fields_are_forwarded_to_the_gateway() -> None:
    body = completion_body({"prompt": "Hi", "max_new_tokens": 5, "temperature": 0.5, "seed": 7})
    assert body["seed"] == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 1.5), ("temperature", -0.1), ("max_new_tokens", 0), ("top_p", 0.0), ("top_k", -2)],
)
def test_out_of_range_sampling_values_fail_before_sending_and_name_the_field(field: str, value: Any) -> None:
    fields = {"prompt": "Hi", "max_new_tokens": 5, "temperature": 0.2, field: value}
    with pytest.raises(ValidationError, match=field):
        completion_body(fields)


def test_completion_requests_name_the_endpoint_in_the_query() -> None:
    body = {"prompt": "Hi"}
    for kind, path in [
        ("sync", "v1/llm/completions-sync"),
        ("stream", "v1/llm/completions-stream"),
        ("async", "v1/llm/completions-async"),
    ]:
        spec = completion_request(kind, "my-llm", body, 10, None)
        assert (spec.method, spec.path, dict(spec.params)) == ("POST", path, {"model_endpoint_name": "my-llm"})
        assert not spec.idempotent  # a POST that may have reached the server is never repeated blindly


def test_create_endpoint_defaults_match_the_published_client() -> None:
    spec = create_endpoint_request(
        {"name": "demo", "model_name": "smollm2-135m", "min_workers": 0, "max_workers": 1, "per_worker": 2}, 10, None
    )
    assert (spec.method, spec.path) == ("POST", "v1/llm/model-endpoints")
    assert spec.json == {
        "name": "demo",
        "model_name": "smollm2-135m",
        "source": "hugging_face",
        "inference_framework": "vllm",
        "inference_framework_image_tag": "latest",
        "num_shards": 1,
        "metadata": {},
        "endpoint_type": "streaming",
        "min_workers": 0,
        "max_workers": 1,
        "per_worker": 2,
        "labels": {},
        "public_inference": True,
    }


def test_create_endpoint_serialises_enums_urls_and_extra_fields() -> None:
    spec = create_endpoint_request(
        {
            "name": "demo",
            "model_name": "m",
            "inference_framework": LLMInferenceFramework.TEXT_GENERATION_INFERENCE,
            "endpoint_type": ModelEndpointType.SYNC,
            "gpu_type": "nvidia-ampere-a10",
            "default_callback_url": "https://hooks.example.com/done",
            "post_inference_hooks": hook_names([PostInferenceHooks.CALLBACK]),
            "min_workers": 1,
            "max_workers": 2,
            "per_worker": 4,
            "some_future_field": {"x": 1},
        },
        10,
        {"x-trace": "abc"},
    )
    assert spec.json["inference_framework"] == "text_generation_inference"
    assert spec.json["endpoint_type"] == "sync"
    assert spec.json["gpu_type"] == "nvidia-ampere-a10"
    assert spec.json["default_callback_url"] == "https://hooks.example.com/done"
    assert spec.json["post_inference_hooks"] == ["callback"]
    assert spec.json["some_future_field"] == {"x": 1}
    assert dict(spec.headers) == {"x-trace": "abc"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gpu_type": "nvidia-imaginary"}, "gpu_type"),
        ({"inference_framework": "tgi"}, "inference_framework"),
        ({"min_workers": -1}, "min_workers"),
        ({"per_worker": 0}, "per_worker"),
        ({"default_callback_url": "not a url"}, "default_callback_url"),
    ],
)
def test_create_endpoint_rejects_impossible_values_locally(fields: dict[str, Any], message: str) -> None:
    base = {"name": "demo", "model_name": "m", "min_workers": 0, "max_workers": 1, "per_worker": 2}
    with pytest.raises(ValidationError, match=message):
        create_endpoint_request(base | fields, 10, None)


def test_update_sends_only_the_fields_to_change() -> None:
    spec = update_endpoint_request("demo", {"max_workers": 3, "labels": None, "model_name": None}, 10, None)
    assert (spec.method, spec.path, spec.json) == ("PUT", "v1/llm/model-endpoints/demo", {"max_workers": 3})
    assert spec.idempotent


def test_endpoint_names_are_quoted_so_they_cannot_reach_another_route() -> None:
    assert get_endpoint_request("a/b?c", 10, None).path == "v1/llm/model-endpoints/a%2Fb%3Fc"
    assert delete_endpoint_request("demo", 10, None).method == "DELETE"
    with pytest.raises(ValidationError):
        get_endpoint_request("", 10, None)


def test_task_status_is_an_idempotent_get() -> None:
    spec = task_status_request("abc-123", 10, None)
    assert (spec.method, spec.path, spec.idempotent) == ("GET", "v1/async-tasks/abc-123", True)
