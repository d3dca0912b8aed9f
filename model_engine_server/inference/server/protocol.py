"""Wire models the server parses: TGI's ``/generate`` request and ``/info``, and the OpenAI completions/chat
requests, field for field (responses are built as plain dicts where they are written).

Request models are lenient about types TGI's own client sends (``None`` for unset options, extra fields ignored);
ranges are checked in ``validation.py`` so errors carry TGI's messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- TGI ------------------------------------------------------------------------------------------------------------


class TgiParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    best_of: int | None = None
    decoder_input_details: bool = False
    details: bool = False
    do_sample: bool = False
    frequency_penalty: float | None = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = None
    top_p: float | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool = False


class TgiRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str
    parameters: TgiParameters = Field(default_factory=TgiParameters)
    stream: bool = False


class TgiInfo(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_device_type: str
    model_pipeline_tag: str = "text-generation"
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_batch_size: int | None
    validation_workers: int = 1
    max_client_batch_size: int = 1
    router: str = "llm-engine"
    version: str
    sha: str | None = None
    docker_label: str | None = None


# --- OpenAI ---------------------------------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class _OpenAiSampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_OpenAiSampling):
    prompt: str | list[str] | list[int]
    echo: bool = False
    logprobs: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_OpenAiSampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    chat_template: str | None = None  # replaces the tokenizer's template for this request (as vLLM's does)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class OpenAiErrorBody(BaseModel):
    object: Literal["error"] = "error"
    message: str
    type: str
    param: str | None = None
    code: int
