"""llmengine: the Python SDK of LLM Engine.

    from llmengine import ChatCompletion, Completion, Model

    Model.create(name="demo", model="smollm2-135m", inference_framework_image_tag="latest", ...)
    print(Completion.create(model="demo", prompt="Hello", max_new_tokens=10).output.text)
    print(ChatCompletion.create(model="demo", messages=[{"role": "user", "content": "Hi"}]).output.text)

Configure with ``LLM_ENGINE_BASE_PATH`` and ``SCALE_API_KEY`` (or ``llmengine.api_engine.set_base_path`` /
``set_api_key``). The public names match the published ``scale-llm-engine`` client.
"""

from llmengine._core.retry import RetryPolicy
from llmengine._transport import aclose_connections, close_connections
from llmengine._version import __version__
from llmengine.chat_completion import AsyncChatCompletionStream, ChatCompletion, ChatCompletionStream
from llmengine.chat_types import ChatCompletionChunk, ChatCompletionResponse
from llmengine.completion import AsyncCompletionTask, Completion, CompletionTask
from llmengine.data_types import (
    CompletionOutput,
    CompletionStreamOutput,
    CompletionStreamResponse,
    CompletionStreamV1Request,
    CompletionStreamV1Response,
    CompletionSyncResponse,
    CompletionSyncV1Request,
    CompletionSyncV1Response,
    CreateAsyncTaskV1Response,
    CreateLLMEndpointRequest,
    CreateLLMEndpointResponse,
    DeleteLLMEndpointResponse,
    GetAsyncTaskV1Response,
    GetLLMEndpointResponse,
    GetModelEndpointResponse,
    GpuType,
    ListLLMEndpointsResponse,
    LLMInferenceFramework,
    LLMSource,
    ModelEndpointDeploymentState,
    ModelEndpointResourceState,
    ModelEndpointStatus,
    ModelEndpointType,
    PostInferenceHooks,
    Quantization,
    StreamError,
    StreamErrorContent,
    TaskStatus,
    TokenOutput,
    UpdateLLMEndpointRequest,
    UpdateLLMEndpointResponse,
)
from llmengine.model import Model
from llmengine.streaming import AsyncCompletionStream, CompletionStream

__all__ = [
    "AsyncChatCompletionStream",
    "AsyncCompletionStream",
    "AsyncCompletionTask",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionResponse",
    "ChatCompletionStream",
    "Completion",
    "CompletionOutput",
    "CompletionStream",
    "CompletionStreamOutput",
    "CompletionStreamResponse",
    "CompletionStreamV1Request",
    "CompletionStreamV1Response",
    "CompletionSyncResponse",
    "CompletionSyncV1Request",
    "CompletionSyncV1Response",
    "CompletionTask",
    "CreateAsyncTaskV1Response",
    "CreateLLMEndpointRequest",
    "CreateLLMEndpointResponse",
    "DeleteLLMEndpointResponse",
    "GetAsyncTaskV1Response",
    "GetLLMEndpointResponse",
    "GetModelEndpointResponse",
    "GpuType",
    "LLMInferenceFramework",
    "LLMSource",
    "ListLLMEndpointsResponse",
    "Model",
    "ModelEndpointDeploymentState",
    "ModelEndpointResourceState",
    "ModelEndpointStatus",
    "ModelEndpointType",
    "PostInferenceHooks",
    "Quantization",
    "RetryPolicy",
    "StreamError",
    "StreamErrorContent",
    "TaskStatus",
    "TokenOutput",
    "UpdateLLMEndpointRequest",
    "UpdateLLMEndpointResponse",
    "__version__",
    "aclose_connections",
    "close_connections",
]
