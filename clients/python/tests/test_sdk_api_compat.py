"""Drop-in compatibility, checked against the published ``scale-llm-engine`` itself (introspected in its own venv).

Same public names, same parameters in the same order with the same defaults, and response models with at least the
published fields and enum values — except for the deliberate differences listed here, each with its reason.
"""

from __future__ import annotations

import enum
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

import llmengine
import pytest
from llmengine import data_types

from model_engine_server.testing.peers import run_peer_script

METHODS = [
    ("Completion", "create"),
    ("Completion", "acreate"),
    ("Model", "create"),
    ("Model", "get"),
    ("Model", "list"),
    ("Model", "update"),
    ("Model", "delete"),
    ("Completion", "batch_create"),
    ("Completion", "get_batch_completion"),
    ("Completion", "cancel_batch_completion"),
    ("File", "upload"),
    ("File", "get"),
    ("File", "list"),
    ("File", "delete"),
    ("File", "download"),
]
MODELS = [
    "CompletionSyncV1Request",
    "CompletionStreamV1Request",
    "CompletionSyncV1Response",
    "CompletionStreamV1Response",
    "CompletionOutput",
    "CompletionStreamOutput",
    "TokenOutput",
    "StreamError",
    "StreamErrorContent",
    "CreateLLMEndpointResponse",
    "GetLLMEndpointResponse",
    "GetModelEndpointResponse",
    "ModelEndpointDeploymentState",
    "ModelEndpointResourceState",
    "ListLLMEndpointsResponse",
    "UpdateLLMEndpointResponse",
    "DeleteLLMEndpointResponse",
    "CreateBatchCompletionsV1Response",
    "CreateBatchCompletionsV1RequestContent",
    "UploadFileResponse",
    "GetFileResponse",
    "ListFilesResponse",
    "DeleteFileResponse",
    "GetFileContentResponse",
    "BatchCompletionsJob",
]
ENUMS = ["LLMInferenceFramework", "LLMSource", "Quantization", "GpuType", "ModelEndpointType", "ModelEndpointStatus"]

# Parts of the published package for features this platform does not have.
UNSUPPORTED_NAMES = {
    "FineTune",
    "CancelFineTuneResponse",
    "CreateFineTuneRequest",
    "CreateFineTuneResponse",
    "GetFineTuneResponse",
    "ListFineTunesResponse",
    "ModelDownloadRequest",
    "ModelDownloadResponse",
    "ChatCompletionV2Request",
    "ChatCompletionV2Response",
    "FilteredChatCompletionV2Request",
    "FilteredCompletionV2Request",
    "VLLMEndpointAdditionalArgs",
}
# v1/v2 request classes the published client builds internally; ours sends plain JSON.
UNSUPPORTED_PREFIXES = (
    "CreateBatchCompletionsV1Request",
    "CreateBatchCompletionsV2Request",
    "CreateBatchCompletionsRequest",
)

# (method, parameter) -> (published default, ours, why)
DELIBERATE_DEFAULTS = {
    ("Completion.create", "model"): ("<required>", None, "model_name= is accepted instead"),
    ("Completion.acreate", "model"): ("<required>", None, "model_name= is accepted instead"),
    ("Completion.create", "prompt"): ("<required>", None, "follows model, which has a default now"),
    ("Completion.acreate", "prompt"): ("<required>", None, "follows model, which has a default now"),
    ("Completion.create", "timeout"): (300, 10, "DESIGN.md: timeout=10"),
    ("Completion.acreate", "timeout"): (300, 10, "DESIGN.md: timeout=10"),
}
ADDED_KEYWORDS = {"model_name"}  # keyword-only additions (after the published parameters)

PEER_SCRIPT = """
import enum, inspect, json
import llmengine
from llmengine import Completion, Model, data_types

def describe(function):
    out = []
    for p in inspect.signature(function).parameters.values():
        d = p.default
        d = "<required>" if d is inspect.Parameter.empty else (d.value if isinstance(d, enum.Enum) else d)
        out.append([p.name, p.kind.name, d])
    return out

classes = {"Completion": Completion, "Model": Model, "File": llmengine.File}
print(json.dumps({
    "all": list(llmengine.__all__),
    "signatures": {f"{c}.{m}": describe(getattr(classes[c], m)) for c, m in METHODS},
    "models": {name: sorted(getattr(data_types, name).__fields__) for name in MODELS},
    "enums": {name: sorted(m.value for m in getattr(data_types, name)) for name in ENUMS},
}))
"""


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LLM_ENGINE_DISABLE_VERSION_CHECK": "true",
    }
    script = f"METHODS = {METHODS!r}\nMODELS = {MODELS!r}\nENUMS = {ENUMS!r}\n" + PEER_SCRIPT
    result = run_peer_script(script, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    description: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return description


def describe(function: Callable[..., Any]) -> list[list[Any]]:
    out = []
    for parameter in inspect.signature(function).parameters.values():
        default = parameter.default
        if default is inspect.Parameter.empty:
            default = "<required>"
        elif isinstance(default, enum.Enum):
            default = default.value
        out.append([parameter.name, parameter.kind.name, default])
    return out


def test_every_published_name_exists_unless_its_feature_is_not_part_of_the_platform(published: dict[str, Any]) -> None:
    missing = {
        name
        for name in published["all"]
        if not hasattr(llmengine, name) and name not in UNSUPPORTED_NAMES and not name.startswith(UNSUPPORTED_PREFIXES)
    }
    assert missing == set()


@pytest.mark.parametrize(("cls", "method"), METHODS, ids=[f"{c}.{m}" for c, m in METHODS])
def test_parameters_match_in_name_order_kind_and_default(published: dict[str, Any], cls: str, method: str) -> None:
    key = f"{cls}.{method}"
    theirs = published["signatures"][key]
    ours = [p for p in describe(getattr(getattr(llmengine, cls), method)) if p[0] not in ADDED_KEYWORDS]
    assert [(name, kind) for name, kind, _ in ours] == [(name, kind) for name, kind, _ in theirs]
    for (name, _, our_default), (_, _, their_default) in zip(ours, theirs, strict=True):
        expected = their_default
        if (key, name) in DELIBERATE_DEFAULTS:
            documented_theirs, expected, _why = DELIBERATE_DEFAULTS[(key, name)]
            assert their_default == documented_theirs, f"{key}({name}) changed upstream"
        assert our_default == expected, f"{key}({name}): ours {our_default!r}, published {their_default!r}"


@pytest.mark.parametrize("name", MODELS)
def test_response_models_have_every_published_field(published: dict[str, Any], name: str) -> None:
    fields = getattr(data_types, name).model_fields
    # A field pydantic 2 cannot name (``model_config``) is declared under another name with the published one as alias.
    ours = set(fields) | {field.alias for field in fields.values() if field.alias}
    assert set(published["models"][name]) - ours == set()


@pytest.mark.parametrize("name", ENUMS)
def test_enums_have_every_published_value(published: dict[str, Any], name: str) -> None:
    ours = {member.value for member in getattr(data_types, name)}
    assert set(published["enums"][name]) - ours == set()
