"""The HTTP face of the built-in server: TGI's routes (this module) and the OpenAI routes (``openai.py``).

Handlers only parse, validate, submit to the scheduler and map events to TGI's wire shapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError as BodyValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from model_engine_server.inference.server import openai
from model_engine_server.inference.server.events import ErrorEvent, Finished, TokenEvent
from model_engine_server.inference.server.protocol import TgiInfo, TgiRequest
from model_engine_server.inference.server.scheduler import QueueFullError
from model_engine_server.inference.server.service import Generation, InferenceService
from model_engine_server.inference.server.validation import GenerationRequestError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def get_service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


Service = Annotated[InferenceService, Depends(get_service)]
router = APIRouter()


def tgi_error(status: int, message: str, error_type: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)


def sse(payload: Any) -> bytes:
    return b"data:" + orjson.dumps(payload) + b"\n\n"


def token_json(event: TokenEvent) -> dict[str, Any]:
    t = event.token
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def details_json(finished: Finished) -> dict[str, Any]:
    return {
        "finish_reason": finished.reason,
        "generated_tokens": len(finished.tokens),
        "seed": finished.seed,
        "prefill": [{"id": p.id, "text": p.text, "logprob": p.logprob} for p in finished.prefill],
        "tokens": [{"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special} for t in finished.tokens],
    }


def timing_headers(service: InferenceService, finished: Finished, started: float) -> dict[str, str]:
    generated = max(len(finished.tokens), 1)
    return {
        "x-compute-type": service.runner.device.type,
        "x-total-time": str(int((time.monotonic() - started) * 1000)),
        "x-queue-time": str(int(finished.queue_time * 1000)),
        "x-inference-time": str(int(finished.inference_time * 1000)),
        "x-time-per-token": str(int(finished.inference_time * 1000 / generated)),
        "x-prompt-tokens": str(finished.input_length),
        "x-generated-tokens": str(len(finished.tokens)),
    }


async def generate_response(service: Service, body: TgiRequest, http: Request) -> tuple[Finished, dict[str, str]]:
    """Run a non-streaming TGI request to completion; raises the errors the caller maps to HTTP."""
    started = time.monotonic()
    valid = service.validator.validate_tgi(body.inputs, body.parameters, stream=False)
    generation = service.submit(valid, stream=False, prompt_logprobs=body.parameters.decoder_input_details)
    event = await generation.result(http.is_disconnected)
    if isinstance(event, ErrorEvent):
        raise GenerationFailed(event)
    assert isinstance(event, TokenEvent) and event.finished is not None
    service.metrics.request_duration.observe(time.monotonic() - started)
    return event.finished, timing_headers(service, event.finished, started)


class GenerationFailed(Exception):
    def __init__(self, event: ErrorEvent) -> None:
        super().__init__(event.message)
        self.event = event


async def run_tgi(
    service: InferenceService, body: TgiRequest, http: Request, wrap: Callable[[dict[str, Any]], Any]
) -> Response:
    service.metrics.request_count.inc()
    try:
        finished, headers = await generate_response(service, body, http)
    except GenerationRequestError as error:
        service.metrics.request_failure.labels("validation").inc()
        return tgi_error(422, error.message, "validation")
    except QueueFullError as error:
        service.metrics.request_failure.labels("overloaded").inc()
        return tgi_error(429, str(error), "overloaded")
    except GenerationFailed as error:
        return tgi_error(424, error.event.message, error.event.error_type)
    text = finished.generated_text
    if body.parameters.return_full_text:
        text = body.inputs + text
    payload: dict[str, Any] = {"generated_text": text}
    if body.parameters.details:
        payload["details"] = details_json(finished)
    return Response(orjson.dumps(wrap(payload)), media_type="application/json", headers=headers)


def stream_tgi(service: InferenceService, body: TgiRequest) -> StreamingResponse:
    """TGI answers 200 to every well-formed stream request and reports problems as an in-band error event."""
    service.metrics.request_count.inc()
    started = time.monotonic()
    generation: Generation | None = None
    first: bytes | None = None
    try:
        valid = service.validator.validate_tgi(body.inputs, body.parameters, stream=True)
        generation = service.submit(valid, stream=True)
    except GenerationRequestError as error:
        service.metrics.request_failure.labels("validation").inc()
        first = sse({"error": error.message, "error_type": "validation"})
    except QueueFullError as error:
        service.metrics.request_failure.labels("overloaded").inc()
        first = sse({"error": str(error), "error_type": "overloaded"})

    async def events() -> AsyncIterator[bytes]:
        if generation is None:
            assert first is not None
            yield first
            return
        async for event in generation.events():
            if isinstance(event, ErrorEvent):
                yield sse({"error": event.message, "error_type": event.error_type})
                return
            payload: dict[str, Any] = {
                "index": event.index,
                "token": token_json(event),
                "top_tokens": None,
                "generated_text": None,
                "details": None,
            }
            if event.finished is not None:
                text = event.finished.generated_text
                payload["generated_text"] = body.inputs + text if body.parameters.return_full_text else text
                if body.parameters.details:
                    payload["details"] = {
                        "finish_reason": event.finished.reason,
                        "generated_tokens": len(event.finished.tokens),
                        "seed": event.finished.seed,
                        "input_length": event.finished.input_length,
                    }
                service.metrics.request_duration.observe(time.monotonic() - started)
            yield sse(payload)

    headers = {**SSE_HEADERS, "x-compute-type": service.runner.device.type}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.post("/generate")
async def generate(service: Service, body: TgiRequest, http: Request) -> Response:
    return await run_tgi(service, body, http, wrap=lambda payload: payload)


@router.post("/generate_stream")
async def generate_stream(service: Service, body: TgiRequest) -> StreamingResponse:
    return stream_tgi(service, body)


@router.post("/")
async def compat_generate(service: Service, body: TgiRequest, http: Request) -> Response:
    """TGI's root route: streams when ``stream`` is true, otherwise answers a one-element list (as HF's API does)."""
    if body.stream:
        return stream_tgi(service, body)
    return await run_tgi(service, body, http, wrap=lambda payload: [payload])


@router.get("/health")
async def health(service: Service) -> Response:
    if not service.scheduler.healthy:
        return tgi_error(503, "The generation loop is not running", "healthcheck")
    return Response(status_code=200)


@router.get("/info")
async def info(service: Service) -> TgiInfo:
    i = service.info
    return TgiInfo(
        model_id=i.model_id,
        model_dtype=str(service.runner.model.dtype).removeprefix("torch."),
        model_device_type=service.runner.device.type,
        max_concurrent_requests=i.max_concurrent_requests,
        max_stop_sequences=i.max_stop_sequences,
        max_input_tokens=i.max_input_tokens,
        max_total_tokens=i.max_total_tokens,
        max_batch_total_tokens=i.max_batch_total_tokens,
        max_batch_size=i.max_batch_size,
        version=i.version,
    )


@router.get("/metrics")
async def metrics(service: Service) -> Response:
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _describe(error: BodyValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{location}: {item.get('msg')}" if location else str(item.get("msg")))
    return "Failed to deserialize the JSON body into the target type: " + "; ".join(parts)


async def _body_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, BodyValidationError)
    message = _describe(error)
    request.app.state.service.metrics.request_failure.labels("validation").inc()
    if request.url.path.startswith("/v1/"):
        return openai.error_response(400, message, "BadRequestError")
    return tgi_error(422, message, "validation")


def create_app(service: InferenceService, on_shutdown: Callable[[], Awaitable[None]] | None = None) -> FastAPI:
    """The server's app. The scheduler thread starts with the app and stops (failing in-flight requests) with it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.scheduler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.scheduler.stop)
            if on_shutdown is not None:
                await on_shutdown()

    app = FastAPI(title="LLM Engine inference server", version=service.info.version, lifespan=lifespan)
    app.state.service = service
    app.add_exception_handler(BodyValidationError, _body_validation_error)
    app.include_router(router)
    app.include_router(openai.router)
    return app
