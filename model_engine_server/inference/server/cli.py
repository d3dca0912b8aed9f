"""``model-engine inference-server``: load a model, then serve it. Flags mirror TGI's launcher where they overlap.

The model is loaded (and warmed up with one forward pass) before the port opens, so ``GET /health`` answering at all
means the model is ready; a missing or broken model exits non-zero without ever listening.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from model_engine_server import __version__
from model_engine_server.config import Settings
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.inference.server.speculation import DEFAULT_SPECULATE

if TYPE_CHECKING:
    from model_engine_server.inference.server.service import InferenceService

logger = logging.getLogger("model_engine_server.inference.server")
_IMPORTED_AT = time.monotonic()


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int


def derive_limits(
    context_length: int, max_input_tokens: int | None, max_total_tokens: int | None, max_batch_total_tokens: int | None
) -> Limits:
    """Fill unset limits from the model's context length and check them against each other, as TGI's launcher does."""
    total = max_total_tokens or context_length
    if max_input_tokens is None:
        max_input_tokens = total - min(1024, total // 4)
    batch_total = max_batch_total_tokens or max(16384, total)
    if not 0 < max_input_tokens < total:
        raise ValueError(
            f"--max-input-tokens ({max_input_tokens}) must be positive and below --max-total-tokens ({total})"
        )
    if total > batch_total:
        raise ValueError(f"--max-total-tokens ({total}) must be <= --max-batch-total-tokens ({batch_total})")
    return Limits(max_input_tokens, total, batch_total)


def inference_server(
    model_id: Annotated[str, typer.Option(help="Model-zoo name, local checkpoint directory, or .gguf file.")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    hostname: Annotated[str, typer.Option(help="Address to bind (TGI's default: all interfaces).")] = "0.0.0.0",
    max_input_tokens: Annotated[int | None, typer.Option(help="Longest prompt accepted (default: derived).")] = None,
    max_total_tokens: Annotated[
        int | None, typer.Option(help="Prompt + new tokens per request (default: context).")
    ] = None,
    max_concurrent_requests: Annotated[int, typer.Option(help="In-flight requests before answering 429.")] = 128,
    max_batch_total_tokens: Annotated[
        int | None, typer.Option(help="Token budget of the running batch (prompt + max_new_tokens of each request).")
    ] = None,
    max_batch_prefill_tokens: Annotated[int, typer.Option(help="Prompt tokens prefilled in one step.")] = 4096,
    max_batch_size: Annotated[int | None, typer.Option(help="Most sequences in the running batch.")] = None,
    max_stop_sequences: Annotated[int, typer.Option(help="Most stop sequences per request.")] = 4,
    waiting_served_ratio: Annotated[
        float, typer.Option(help="Prefill new requests once waiting >= this ratio x running ones ...")
    ] = 1.2,
    max_waiting_tokens: Annotated[int, typer.Option(help="... or once they have waited this many decode steps.")] = 8,
    prefix_cache_mb: Annotated[
        int | None,
        typer.Option(min=0, help="Memory for cached prompt-prefix key/values; 0 disables (default: the setting)."),
    ] = None,
    speculate: Annotated[
        int,
        typer.Option(
            min=0,
            max=16,
            help="Tokens guessed per step, by n-gram lookup, while one greedy request decodes alone; 0 disables.",
        ),
    ] = DEFAULT_SPECULATE,
    dtype: Annotated[
        str, typer.Option(help="auto (float32 on CPU, bfloat16 on CUDA), float32, float16, bfloat16.")
    ] = "auto",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
    num_threads: Annotated[int | None, typer.Option(help="Torch threads (default: one per core).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where converted GGUF checkpoints are kept.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a model over TGI's HTTP protocol (and OpenAI's completions routes) with continuous batching."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    gc.disable()  # until the model is loaded: see _serving_gc
    try:
        from model_engine_server.inference.server.app import create_app

        app = create_app(
            build_service(
                model_id=model_id,
                cache_dir=cache_dir or settings.models_dir,
                max_input_tokens=max_input_tokens,
                max_total_tokens=max_total_tokens,
                max_concurrent_requests=max_concurrent_requests,
                max_batch_total_tokens=max_batch_total_tokens,
                max_batch_prefill_tokens=max_batch_prefill_tokens,
                max_batch_size=max_batch_size,
                max_stop_sequences=max_stop_sequences,
                waiting_served_ratio=waiting_served_ratio,
                max_waiting_tokens=max_waiting_tokens,
                prefix_cache_mb=settings.prefix_cache_mb if prefix_cache_mb is None else prefix_cache_mb,
                speculate=speculate,
                dtype=dtype,
                device=device,
                num_threads=num_threads,
            )
        )
    except Exception as error:  # any load failure is fatal and must say why, without a traceback
        logger.debug("Start-up failed", exc_info=True)
        typer.echo(f"error: cannot start the inference server: {error}", err=True)
        raise typer.Exit(code=1) from None

    import uvicorn

    _serving_gc()
    logger.info("Listening on http://%s:%d (%.1f s after start)", hostname, port, seconds_since_start())
    logging.getLogger("uvicorn.access").addFilter(_skip_health_probes)
    uvicorn.run(app, host=hostname, port=port, log_level=log_level.lower(), timeout_graceful_shutdown=30)


def _serving_gc() -> None:
    """Turn the garbage collector back on, leaving out the objects start-up made (they live as long as the server).

    Importing torch and transformers allocates over half a million objects, and the collector, triggered over and
    over by them, made the imports a fifth slower (a cold start waits for them); collecting once afterwards would
    cost about 0.3 s to free the few thousand that are garbage. Frozen objects are never scanned again, which also
    keeps later collections short while requests are served.
    """
    gc.freeze()
    gc.enable()


def _skip_health_probes(record: logging.LogRecord) -> bool:
    """Orchestrators probe /health every few seconds; logging each probe would bury the real requests."""
    args = record.args
    return not (isinstance(args, tuple) and len(args) >= 3 and args[2] == "/health")


def seconds_since_start() -> float:
    """Seconds since this module was imported: nearly all of a replica's start-up, imports included."""
    return time.monotonic() - _IMPORTED_AT


def build_service(
    *,
    model_id: str,
    cache_dir: Path,
    max_input_tokens: int | None,
    max_total_tokens: int | None,
    max_concurrent_requests: int,
    max_batch_total_tokens: int | None,
    max_batch_prefill_tokens: int,
    max_batch_size: int | None,
    max_stop_sequences: int,
    waiting_served_ratio: float,
    max_waiting_tokens: int,
    prefix_cache_mb: int,
    dtype: str,
    speculate: int,
    device: str | None,
    num_threads: int | None,
) -> InferenceService:
    """Load, warm up and wire the model, scheduler and validator (the scheduler thread is not started yet)."""
    # Heavy imports stay here so `model-engine --help` does not load torch.
    from model_engine_server.inference.model_loading import resolve_model
    from model_engine_server.inference.server.engine import ModelRunner, configure_threads
    from model_engine_server.inference.server.metrics import ServerMetrics
    from model_engine_server.inference.server.prefix_cache import PrefixCache
    from model_engine_server.inference.server.scheduler import BatchLimits, Scheduler
    from model_engine_server.inference.server.service import InferenceService, ServerInfo
    from model_engine_server.inference.server.validation import RequestValidator, TokenLimits

    threads = configure_threads(num_threads)
    zoo = ModelZoo()
    checkpoint = resolve_model(model_id, cache_dir, zoo)
    logger.info("Loading %s (torch threads: %d; %.1f s after start)", checkpoint, threads, seconds_since_start())
    runner = ModelRunner.load(checkpoint, dtype=dtype, device=device)
    warm_up_started = time.monotonic()
    runner.warm_up()
    logger.info("Warmed up in %.2f s", time.monotonic() - warm_up_started)
    zoo_entry = zoo.get(model_id)
    config_context = int(getattr(runner.model.config, "max_position_embeddings", 2048))
    context = zoo_entry.context_length if zoo_entry else config_context
    limits = derive_limits(context, max_input_tokens, max_total_tokens, max_batch_total_tokens)
    metrics = ServerMetrics()
    batch_limits = BatchLimits(
        max_concurrent_requests=max_concurrent_requests,
        max_batch_total_tokens=limits.max_batch_total_tokens,
        max_batch_prefill_tokens=max_batch_prefill_tokens,
        max_batch_size=max_batch_size,
        waiting_served_ratio=waiting_served_ratio,
        max_waiting_steps=max_waiting_tokens,
    )
    info = ServerInfo(
        model_id=model_id,
        version=__version__,
        max_input_tokens=limits.max_input_tokens,
        max_total_tokens=limits.max_total_tokens,
        max_stop_sequences=max_stop_sequences,
        max_concurrent_requests=max_concurrent_requests,
        max_batch_total_tokens=limits.max_batch_total_tokens,
        max_batch_size=max_batch_size,
    )
    validator = RequestValidator(
        runner.tokenizer, TokenLimits(limits.max_input_tokens, limits.max_total_tokens, max_stop_sequences)
    )
    prefix_cache = PrefixCache(capacity_bytes=prefix_cache_mb * 1024 * 1024)
    logger.info(
        "Prefix cache: %s",
        f"{prefix_cache_mb} MB, {prefix_cache.block_size}-token blocks" if prefix_cache_mb else "off",
    )
    scheduler = Scheduler(runner, batch_limits, metrics, prefix_cache, speculate=speculate)
    return InferenceService(runner, scheduler, validator, metrics, info)
