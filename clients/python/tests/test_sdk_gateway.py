"""The SDK against the real gateway (``model-engine gateway`` in its own process): model endpoints end to end."""

from __future__ import annotations

import uuid

import pytest
from llmengine import (
    LLMInferenceFramework,
    LLMSource,
    Model,
    ModelEndpointStatus,
    ModelEndpointType,
    api_engine,
)
from llmengine.errors import BadRequestError, ConflictError, NotFoundError

from model_engine_server.testing.platform import Platform

TGI = LLMInferenceFramework.TEXT_GENERATION_INFERENCE


def unique(prefix: str = "sdk") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_create_get_list_update_delete(gateway: Platform) -> None:
    name = unique()
    created = Model.create(
        name=name,
        model="smollm2-135m",
        inference_framework_image_tag="latest",
        inference_framework=TGI,
        min_workers=1,
        max_workers=2,
        per_worker=4,
        labels={"team": "search"},
    )
    assert created.endpoint_creation_task_id

    endpoint = Model.get(name)
    assert endpoint.name == name
    assert endpoint.model_name == "smollm2-135m"
    assert endpoint.source is LLMSource.HUGGING_FACE
    assert endpoint.inference_framework is TGI
    assert endpoint.status is ModelEndpointStatus.UPDATE_PENDING  # this gateway runs no reconciler
    assert endpoint.spec is not None
    assert endpoint.spec.endpoint_type is ModelEndpointType.STREAMING
    assert endpoint.spec.labels == {"team": "search"}
    assert endpoint.spec.created_by == api_engine.get_api_key()
    assert endpoint.spec.deployment_state is not None
    state = endpoint.spec.deployment_state
    assert (state.min_workers, state.max_workers, state.per_worker) == (1, 2, 4)
    # Hardware left out of the request comes from the model zoo.
    assert endpoint.spec.resource_state is not None and endpoint.spec.resource_state.gpus == 0

    assert [e.name for e in Model.list().model_endpoints] == [name]

    assert Model.update(name, max_workers=3).endpoint_creation_task_id
    updated = Model.get(name)
    assert updated.spec is not None and updated.spec.deployment_state is not None
    assert updated.spec.deployment_state.max_workers == 3
    assert updated.spec.labels == {"team": "search"}  # fields not sent stay as they were

    assert Model.delete(name).deleted is True
    assert Model.get(name).status is ModelEndpointStatus.DELETE_IN_PROGRESS


def test_the_published_clients_defaults_are_accepted(gateway: Platform) -> None:
    # Published defaults: vLLM, min_workers=0, max_workers=1, per_worker=2, public_inference=True.
    name = unique()
    Model.create(name=name, model="smollm2-135m", inference_framework_image_tag="latest")
    endpoint = Model.get(name)
    assert endpoint.inference_framework is LLMInferenceFramework.VLLM
    assert endpoint.spec is not None and endpoint.spec.deployment_state is not None
    state = endpoint.spec.deployment_state
    assert (state.min_workers, state.max_workers, state.per_worker) == (0, 1, 2)
    assert endpoint.spec.public_inference is True


def test_an_unknown_endpoint_is_not_found_with_the_servers_message(gateway: Platform) -> None:
    with pytest.raises(NotFoundError, match="no-such-endpoint"):
        Model.get("no-such-endpoint")
    with pytest.raises(NotFoundError):
        Model.delete("no-such-endpoint")
    with pytest.raises(NotFoundError):
        Model.update("no-such-endpoint", max_workers=2)


def test_invalid_endpoints_are_bad_requests_with_the_servers_reason(gateway: Platform) -> None:
    with pytest.raises(BadRequestError, match="must not exceed max_workers") as caught:
        Model.create(name=unique(), model="smollm2-135m", inference_framework_image_tag="latest", min_workers=3)
    assert caught.value.status_code == 400
    with pytest.raises(BadRequestError, match="Unknown model_name"):
        Model.create(name=unique(), model="no-such-model", inference_framework_image_tag="latest")
    with pytest.raises(BadRequestError, match="is not valid"):
        Model.create(name="Not_A_Dns_Name", model="smollm2-135m", inference_framework_image_tag="latest")
    assert Model.list().model_endpoints == []


def test_a_taken_name_is_a_conflict(gateway: Platform) -> None:
    name = unique()
    Model.create(name=name, model="smollm2-135m", inference_framework_image_tag="latest")
    with pytest.raises(ConflictError, match="already exists"):
        Model.create(name=name, model="smollm2-135m", inference_framework_image_tag="latest")


def test_each_key_sees_only_its_own_endpoints(gateway: Platform) -> None:
    name = unique()
    Model.create(name=name, model="smollm2-135m", inference_framework_image_tag="latest")
    api_engine.set_api_key(f"other-{uuid.uuid4().hex[:8]}")
    assert Model.list().model_endpoints == []
    with pytest.raises(NotFoundError):
        Model.get(name)
