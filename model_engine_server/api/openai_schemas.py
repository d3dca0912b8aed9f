"""Request bodies of the OpenAI-compatible routes: the fields of OpenAI's current API that open engines support, with
OpenAI's ranges, plus the vLLM extras llm-engine accepts. Fields that would change the answer but that no engine
behind the gateway applies (tools, response formats, logit biases, …) are refused with a 400 naming the field;
unknown fields are ignored, as OpenAI's own API does with metadata-like fields.

Only the fields a caller set are forwarded to the engine (``upstream_fields``); the engine applies its own defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.exceptions import InvalidRequestError

# Fields of OpenAI's API that would be silently ignored downstream; refused while no engine here applies them.
REFUSED_FIELDS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "suffix",
    "web_search_options",
)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class OpenAiBody(BaseModel):
    # Strict: JSON types as the document states them (OpenAI refuses "5" for 5 too).
    model_config = ConfigDict(extra="allow", strict=True)  # kept to name refused fields; never forwarded

    model: str = Field(min_length=1, description="The model endpoint's name.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="0 decodes greedily.")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's sampling extras.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None

    @property
    def streamed(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def token_limit(self) -> int:
        return self.max_tokens or 1

    def admission_request(self) -> CompletionRequest:
        """What the shared admission check needs to know (the generation budget; the prompt stays with the engine,
        which counts its tokens — the gateway never tokenizes)."""
        return CompletionRequest(prompt="", max_new_tokens=self.token_limit(), temperature=self.temperature or 0.0)

    def routing_prompt(self) -> str | None:
        """Text whose prefixes match the prompt the engine will build (for prefix-cache affinity)."""
        return None

    def upstream_fields(self) -> dict[str, Any]:
        """The fields the caller set, to forward; raises for refused ones."""
        extra = self.model_extra or {}
        refused = next((name for name in REFUSED_FIELDS if extra.get(name) not in (None, [], {})), None)
        if refused is not None:
            raise InvalidRequestError(f"{refused} is not supported by this server.", param=refused)
        return self.model_dump(exclude_unset=True, exclude_none=True, exclude=set(extra) | {"user"})


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class ChatCompletionBody(OpenAiBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    chat_template_kwargs: dict[str, Any] | None = None

    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 1

    def routing_prompt(self) -> str | None:
        """The messages in order, each as role and text. The engine's chat template renders messages in order too,
        so conversations sharing their first messages share a prefix here exactly when they do after the template
        (the gateway does not apply the template: it does not have the tokenizer)."""
        return "".join(f"<{m.role}>{_text(m.content)}\n" for m in self.messages)

    def upstream_fields(self) -> dict[str, Any]:
        fields = super().upstream_fields()
        for message in fields["messages"]:
            content = message.get("content")
            if isinstance(content, list):  # text parts: the same text as one string, which every chat template takes
                message["content"] = "".join(part["text"] for part in content)
        return fields


class CompletionBody(OpenAiBody):
    prompt: (
        Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    ) = Field(description="A prompt, or a list of prompts.")
    echo: bool | None = None

    def routing_prompt(self) -> str | None:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    logprobs: int | None = Field(default=None, ge=0, le=20)


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""
