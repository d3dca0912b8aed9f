"""The SDK against the whole platform: ``model-engine serve`` (gateway, reconciler, local orchestrator, worker).

Replicas are the instant TGI server started the way the local orchestrator starts inference servers, so an
endpoint's life — created, READY, serving sync/stream/async completions, deleted — is real and takes seconds.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
from llmengine import Completion, LLMInferenceFramework, Model, ModelEndpointStatus, api_engine
from llmengine.errors import NotFoundError

from model_engine_server.testing import eventually
from model_engine_server.testing.platform import Platform, start_platform
from model_engine_server.testing.tgi import instant_text


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    running = start_platform(
        "serve",
        tmp_path_factory.mktemp("serve"),
        auth_mode="open",
        demo_model="",
        inference_server_command=f"{sys.executable} -m model_engine_server.testing.tgi",
        reconcile_interval_seconds="0.5",
    )
    try:
        yield running
    finally:
        running.stop()


def status_of(name: str) -> ModelEndpointStatus | None:
    try:
        return Model.get(name).status
    except NotFoundError:
        return None


def test_an_endpoint_from_creation_to_completions_to_deletion(platform: Platform) -> None:
    api_engine.set_base_path(platform.url)
    api_engine.set_api_key(f"tenant-{uuid.uuid4().hex[:8]}")
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    Model.create(
        name=name,
        model="smollm2-135m",
        inference_framework_image_tag="latest",
        inference_framework=LLMInferenceFramework.TEXT_GENERATION_INFERENCE,
        min_workers=1,
    )
    eventually(lambda: status_of(name) is ModelEndpointStatus.READY, timeout=90, what="endpoint READY")
    endpoint = Model.get(name)
    assert endpoint.spec is not None and endpoint.spec.deployment_state is not None
    assert endpoint.spec.deployment_state.available_workers == 1

    expected = instant_text(3)
    assert Completion.create(model=name, prompt="Hello", max_new_tokens=3).output.text == expected
    streamed = [
        e.output.text for e in Completion.create(model=name, prompt="Hello", max_new_tokens=3, stream=True) if e.output
    ]
    assert "".join(streamed) == expected
    task = Completion.submit(model=name, prompt="Hello", max_new_tokens=3)
    assert task.result(timeout=90).output.text == expected

    assert Model.delete(name).deleted
    eventually(lambda: status_of(name) is None, timeout=60, what="endpoint removed")
    with pytest.raises(NotFoundError):
        Completion.create(model=name, prompt="Hello")
