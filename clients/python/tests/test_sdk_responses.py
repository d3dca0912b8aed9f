"""Reading answers without I/O: error statuses into typed errors, bodies into models, retry and task decisions."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from llmengine import (
    CompletionSyncV1Response,
    GetAsyncTaskV1Response,
    GetLLMEndpointResponse,
    ListLLMEndpointsResponse,
    ModelEndpointStatus,
    TaskStatus,
    errors,
)
from llmengine._core.responses import completion_from_task, error_from_response, parse_body, retry_after_seconds
from llmengine._core.retry import Failure, RetryPolicy, poll_intervals

# What the gateway returns for an endpoint (shape of DESIGN.md's wire contract).
ENDPOINT = {
    "id": "end_1",
    "name": "demo",
    "model_name": "smollm2-135m",
    "source": "hugging_face",
    "status": "UPDATE_FAILED",
    "inference_framework": "text_generation_inference",
    "inference_framework_image_tag": "latest",
    "num_shards": 1,
    "quantize": None,
    "checkpoint_path": None,
    "spec": {
        "id": "end_1",
        "name": "demo",
        "endpoint_type": "streaming",
        "destination": "local",
        "bundle_name": "demo",
        "status": "UPDATE_FAILED",
        "status_reason": "replica crashed 3 times: out of memory",
        "created_by": "alice",
        "created_at": "2026-11-22T02:00:00Z",
        "last_updated_at": "2026-11-22T02:01:00Z",
        "labels": {"team": "search"},
        "metadata": {},
        "post_inference_hooks": [],
        "default_callback_url": None,
        "deployment_state": {
            "min_workers": 1,
            "max_workers": 2,
            "per_worker": 10,
            "concurrent_requests_per_worker": 10,
            "available_workers": 0,
            "unavailable_workers": 1,
        },
        "resource_state": {
            "cpus": "1",
            "gpus": 0,
            "memory": "2Gi",
            "gpu_type": None,
            "storage": None,
            "nodes_per_worker": 1,
        },
        "public_inference": False,
        "high_priority": False,
        "a_field_from_a_newer_gateway": 1,
    },
}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, errors.BadRequestError),
        (422, errors.BadRequestError),
        (401, errors.UnauthorizedError),
        (404, errors.NotFoundError),
        (429, errors.RateLimitExceededError),
        (500, errors.ServerError),
        (503, errors.ServerError),
        (409, errors.ConflictError),
        (418, errors.UnknownError),
    ],
)
def test_each_status_class_has_its_error_type_carrying_the_detail(
    status: int, error_type: type[errors.APIError]
) -> None:
    error = error_from_response(status, json.dumps({"detail": "Endpoint 'x' is not ready: loading"}).encode())
    assert isinstance(error, error_type)
    assert isinstance(error, errors.LLMEngineError)
    assert isinstance(error, errors.APIError)
    assert error.status_code == status
    assert error.detail == "Endpoint 'x' is not ready: loading"
    assert "Endpoint 'x' is not ready: loading" in str(error)


def test_validation_details_become_a_readable_message_and_stay_available_raw() -> None:
    detail = [
        {"loc": ["body", "temperature"], "msg": "Input should be less than or equal to 1", "type": "x"},
        {"loc": ["query", "model_endpoint_name"], "msg": "Field required", "type": "missing"},
    ]
    error = error_from_response(422, json.dumps({"detail": detail}).encode())
    assert str(error) == "temperature: Input should be less than or equal to 1; model_endpoint_name: Field required"
    assert error.detail == detail


def test_a_body_that_is_not_json_is_still_shown() -> None:
    error = error_from_response(502, b"<html>Bad Gateway</html>")
    assert isinstance(error, errors.ServerError)
    assert "Bad Gateway" in str(error)
    assert "(empty response body)" in str(error_from_response(500, b""))


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == pytest.approx(30.0)


def test_an_endpoint_with_all_its_details_parses_and_unknown_fields_are_ignored() -> None:
    listed = parse_body(json.dumps({"model_endpoints": [ENDPOINT]}).encode(), ListLLMEndpointsResponse)
    (endpoint,) = listed.model_endpoints
    assert endpoint.status is ModelEndpointStatus.UPDATE_FAILED
    assert endpoint.spec is not None
    assert endpoint.spec.status_reason == "replica crashed 3 times: out of memory"
    assert endpoint.spec.deployment_state is not None
    assert endpoint.spec.deployment_state.unavailable_workers == 1
    assert endpoint.spec.labels == {"team": "search"}


def test_a_status_outside_the_contract_is_refused() -> None:
    with pytest.raises(errors.MalformedResponseError, match="GetLLMEndpointResponse"):
        parse_body(json.dumps(ENDPOINT | {"status": "STARTING"}).encode(), GetLLMEndpointResponse)


def test_the_published_clients_v1_methods_work_without_deprecation_warnings() -> None:
    endpoint = GetLLMEndpointResponse.parse_obj(ENDPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert json.loads(endpoint.json())["spec"]["created_by"] == "alice"
        assert endpoint.dict()["name"] == "demo"
        assert json.loads(endpoint.json(indent=2, exclude_none=True))["spec"].get("default_callback_url") is None


COMPLETION = {"request_id": "req-1", "output": {"text": " fox", "num_prompt_tokens": 2, "num_completion_tokens": 1}}


def test_a_successful_task_yields_the_completion_a_sync_call_would_have() -> None:
    task = GetAsyncTaskV1Response(task_id="t1", status=TaskStatus.SUCCESS, result=COMPLETION)
    completion = completion_from_task(task)
    assert completion == CompletionSyncV1Response.model_validate(COMPLETION)


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.STARTED])
def test_a_running_task_has_no_completion_yet(status: TaskStatus) -> None:
    assert completion_from_task(GetAsyncTaskV1Response(task_id="t1", status=status)) is None


def test_a_failed_task_raises_with_the_workers_reason() -> None:
    task = GetAsyncTaskV1Response(task_id="t1", status=TaskStatus.FAILURE, traceback="upstream returned 422: bad")
    with pytest.raises(errors.TaskFailedError, match="upstream returned 422: bad") as caught:
        completion_from_task(task)
    assert caught.value.task_id == "t1"


def test_retries_happen_for_429_and_503_only_and_stop_at_the_cap() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.should_retry_status(429, attempt=0)
    assert policy.should_retry_status(503, attempt=1)
    assert not policy.should_retry_status(503, attempt=2)
    for status in (400, 401, 404, 500, 502):
        assert not policy.should_retry_status(status, attempt=0)


def test_a_request_that_may_have_reached_the_server_is_repeated_only_if_idempotent() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.should_retry_failure(Failure.NOT_SENT, idempotent=False, attempt=0)
    assert not policy.should_retry_failure(Failure.NO_ANSWER, idempotent=False, attempt=0)
    assert policy.should_retry_failure(Failure.NO_ANSWER, idempotent=True, attempt=1)
    assert not policy.should_retry_failure(Failure.NOT_SENT, idempotent=True, attempt=2)


def test_backoff_grows_is_jittered_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2, max_delay=8, jitter=0.25)
    assert policy.delay(0, rand=lambda: 0.5) == pytest.approx(0.5)
    assert policy.delay(1, rand=lambda: 0.0) == pytest.approx(0.75)
    assert policy.delay(1, rand=lambda: 1.0) == pytest.approx(1.25)
    assert policy.delay(10, rand=lambda: 1.0) == 8  # capped even at the top of the jitter
    assert policy.delay(0, retry_after=3, rand=lambda: 0.5) == 3
    assert policy.delay(0, retry_after=600, rand=lambda: 0.5) == 8


def test_a_nonsensical_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        RetryPolicy(max_retries=-1)


def test_polling_starts_quick_and_settles_at_the_ceiling() -> None:
    intervals = poll_intervals(initial=0.1, multiplier=2, maximum=1.0)
    assert [next(intervals) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_conflict_is_still_an_unknown_error_for_code_written_against_the_published_client() -> None:
    error = error_from_response(409, b'{"detail": "Endpoint \'demo\' already exists."}')
    assert isinstance(error, errors.ConflictError)
    assert isinstance(error, errors.UnknownError)
