"""Authentication against a gateway that checks keys: the SDK's key is accepted, a wrong one is a typed 401."""

from __future__ import annotations

import pytest
from llmengine import Completion, Model, api_engine
from llmengine.errors import UnauthorizedError

from model_engine_server.testing.platform import Platform


def test_a_valid_key_is_accepted(keyed_gateway: Platform) -> None:
    api_engine.set_base_path(keyed_gateway.url)
    api_engine.set_api_key(keyed_gateway.api_key)
    assert Model.list().model_endpoints == []


def test_a_key_from_the_environment_is_used(keyed_gateway: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ENGINE_BASE_PATH", keyed_gateway.url)
    monkeypatch.setenv("SCALE_API_KEY", keyed_gateway.api_key or "")
    assert Model.list().model_endpoints == []


def test_a_wrong_key_is_unauthorized_and_the_key_is_not_echoed(keyed_gateway: Platform) -> None:
    api_engine.set_base_path(keyed_gateway.url)
    api_engine.set_api_key("sk-wrong-key")
    with pytest.raises(UnauthorizedError) as caught:
        Model.list()
    assert caught.value.status_code == 401
    assert caught.value.message
    assert "sk-wrong-key" not in str(caught.value)
    with pytest.raises(UnauthorizedError):
        Completion.create(model="anything", prompt="Hello")
