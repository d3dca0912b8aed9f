"""Prometheus metrics, named as TGI names them (``tgi_*``) so existing dashboards and autoscalers work unchanged.

Each server builds its own registry (nothing at import time), so several servers can live in one test process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_count = Counter("tgi_request_count", "Requests received", registry=r)
        self.request_success = Counter("tgi_request_success", "Requests that completed", registry=r)
        self.request_failure = Counter("tgi_request_failure", "Requests that failed", ["err"], registry=r)
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting for a batch slot", registry=r)
        self.batch_size = Gauge("tgi_batch_current_size", "Sequences in the running batch", registry=r)
        self.batch_max_tokens = Gauge(
            "tgi_batch_current_max_tokens", "Tokens reserved by the running batch (input + max_new_tokens)", registry=r
        )
        self.request_duration = self._seconds("tgi_request_duration", "End-to-end request time (s)")
        self.queue_duration = self._seconds("tgi_request_queue_duration", "Time from arrival to prefill (s)")
        self.inference_duration = self._seconds(
            "tgi_request_inference_duration", "Time from prefill to the last token (s)"
        )
        self.time_to_first_token = self._seconds(
            "tgi_request_time_to_first_token", "Time from arrival to the first generated token (s)"
        )
        self.mean_time_per_token = self._seconds(
            "tgi_request_mean_time_per_token_duration", "Mean time between generated tokens (s)"
        )
        self.generated_tokens = self._tokens("tgi_request_generated_tokens", "Tokens generated per request")
        self.input_length = self._tokens("tgi_request_input_length", "Prompt tokens per request")
        self.batch_inference_duration = self._seconds(
            "tgi_batch_inference_duration", "Duration of one forward pass (s)", "method"
        )

        # Prefix caching has no TGI name; vLLM reports the same figures as vllm:prefix_cache_queries/hits.
        self.prefix_cache_lookups = Counter(
            "llm_engine_prefix_cache_lookups", "Prompts looked up in the prefix cache", registry=r
        )
        self.prefix_cache_hits = Counter(
            "llm_engine_prefix_cache_hits", "Prompts that reused a cached prefix", registry=r
        )
        self.prefix_cache_reused_tokens = Counter(
            "llm_engine_prefix_cache_reused_tokens", "Prompt tokens not prefilled thanks to the cache", registry=r
        )
        self.prefix_cache_bytes = Gauge("llm_engine_prefix_cache_bytes", "Memory held by the prefix cache", registry=r)
        # Speculative decoding (see speculation.py): TGI counts only the skipped forwards; vLLM reports these two as
        # vllm:spec_decode_num_accepted_tokens and the draft tokens minus them.
        self.speculative_tokens = Counter(
            "llm_engine_speculative_tokens", "Guessed tokens the model verified", ["outcome"], registry=r
        )

    def observe_prefix_cache(self, lookups: int, reused_tokens: list[int], cache_bytes: int) -> None:
        """One prefill's lookups, and the tokens each of its prompts reused (0 for a miss)."""
        self.prefix_cache_lookups.inc(lookups)
        self.prefix_cache_hits.inc(sum(1 for n in reused_tokens if n))
        self.prefix_cache_reused_tokens.inc(sum(reused_tokens))
        self.prefix_cache_bytes.set(cache_bytes)

    def _seconds(self, name: str, documentation: str, *labels: str) -> Histogram:
        return Histogram(name, documentation, labels, buckets=_DURATION_BUCKETS, registry=self.registry)

    def _tokens(self, name: str, documentation: str) -> Histogram:
        return Histogram(name, documentation, buckets=_TOKEN_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
