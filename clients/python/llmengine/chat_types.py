"""Request and response types of ``ChatCompletion``, in OpenAI's shapes (``chat.completion``,
``chat.completion.chunk``). Like ``CompletionSyncV1Response``, a response also offers ``output`` and ``outputs`` (a
one-element list), so code written against llm-engine's completion docs reads chat answers the same way."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from llmengine.data_types import BaseModel, CompletionOutput


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")  # engine extras (top_k, …) pass through

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None

    @property
    def output(self) -> CompletionOutput:
        """The first choice as a completion output: its text and the token counts."""
        usage = self.usage
        return CompletionOutput(
            text=self.choices[0].message.content or "" if self.choices else "",
            num_prompt_tokens=usage.prompt_tokens if usage else None,
            num_completion_tokens=usage.completion_tokens if usage else 0,
        )

    @property
    def outputs(self) -> list[CompletionOutput]:
        return [self.output]


class ChatDelta(BaseModel):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChatChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    error: dict[str, Any] | None = None  # an in-band failure; ChatCompletionStream raises it

    @property
    def text(self) -> str:
        """The new text of the first choice ("" for role-only and usage chunks)."""
        return (self.choices[0].delta.content or "") if self.choices else ""
