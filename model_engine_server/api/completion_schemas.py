"""Request and response bodies of the completion routes, exactly as the published ``scale-llm-engine`` client sends
and parses them. The client sends every optional field, as ``null`` when unset, and some fields we do not use
(``include_stop_str_in_output``, ``guided_*``): those are accepted and ignored."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from model_engine_server.domain.completions import CompletionOutput, CompletionRequest

# TGI's default (the platform launches TGI and the built-in server with it) and OpenAI's limit alike.
MAX_STOP_SEQUENCES = 4
StopSequence = Annotated[str, Field(min_length=1)]


class CompletionRequestBody(BaseModel):
    # Strict: JSON types as the document states them (no "5" for 5, no 0 for false).
    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: str = Field(min_length=1, description="The text to complete.")
    max_new_tokens: int = Field(gt=0, description="Upper bound on generated tokens; at most the model's context.")
    temperature: float = Field(ge=0.0, le=1.0, description="0 decodes greedily; higher values sample more freely.")
    stop_sequences: list[StopSequence] | None = Field(
        default=None,
        max_length=MAX_STOP_SEQUENCES,
        description=f"Generation stops after any of these (at most {MAX_STOP_SEQUENCES}, none empty).",
    )
    return_token_log_probs: bool | None = Field(default=False, description="Return each token with its log-prob.")
    top_k: int | None = Field(default=None, ge=-1, description="Sample from the k likeliest tokens; -1 or null: off.")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling; 1 or null: off.")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="vLLM endpoints only.")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    def to_domain(self) -> CompletionRequest:
        return CompletionRequest(
            prompt=self.prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            stop_sequences=list(self.stop_sequences or []),
            return_token_log_probs=bool(self.return_token_log_probs),
            top_k=self.top_k,
            top_p=self.top_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )


class TokenOutputModel(BaseModel):
    token: str
    log_prob: float


class CompletionOutputModel(BaseModel):
    text: str
    num_prompt_tokens: int | None
    num_completion_tokens: int
    tokens: list[TokenOutputModel] | None = None


class CompletionSyncResponse(BaseModel):
    request_id: str
    output: CompletionOutputModel


def sync_response_payload(request_id: str, output: CompletionOutput) -> dict[str, object]:
    """The ``CompletionSyncResponse`` as plain data (serialised with orjson: no model validation on the hot path)."""
    payload: dict[str, object] = {
        "text": output.text,
        "num_prompt_tokens": output.num_prompt_tokens,
        "num_completion_tokens": output.num_completion_tokens,
    }
    if output.tokens is not None:
        payload["tokens"] = [{"token": token.token, "log_prob": token.log_prob} for token in output.tokens]
    return {"request_id": request_id, "output": payload}
