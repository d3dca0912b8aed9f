"""Settings: one class, read from ``LLM_ENGINE_*`` environment variables and validated once at start-up.

The defaults are the embedded one-machine defaults of DESIGN.md (SQLite, an embedded broker, local processes,
open auth on loopback). Every Helm value that configures the control plane maps to exactly one field here.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model_engine_server import __version__
from model_engine_server.domain.autoscaling import ScalingPolicy
from model_engine_server.domain.entities import InferenceFramework
from model_engine_server.domain.model_zoo import DEFAULT_ZOO, ModelZoo, ZooEntry
from model_engine_server.domain.tenancy import Limit, TenantLimits
from model_engine_server.storage.locations import StorageConfig

ENV_PREFIX = "LLM_ENGINE_"


class AuthMode(StrEnum):
    OPEN = "open"  # any key is its own tenant; refused on non-loopback addresses
    KEYS = "keys"  # keys created with `model-engine keys create`, stored hashed


class OrchestratorKind(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class RoutingPolicy(StrEnum):
    """How the gateway picks a replica (inference/routing.py)."""

    LEAST_LOAD = "least_load"  # fewest requests in flight from this gateway
    PREFIX_AFFINITY = "prefix_affinity"  # the replica that served the prompt's prefix last, unless it is overloaded


class ModelZooOverride(BaseModel):
    """One model zoo entry an operator adds or replaces (the Helm chart's ``modelZoo`` value), keyed by model_name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hf_repo: str = Field(min_length=3, pattern=r"^[^/\s]+/[^/\s]+$")
    frameworks: list[InferenceFramework] = Field(min_length=1)
    context_length: int = Field(gt=0)
    gpus: int = Field(ge=0)
    gpu_type: str | None = None
    memory: str
    cpus: str = "4"


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "llm-engine"


def _default_engines_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "llm-engine" / "engines"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- where state lives -------------------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""  # default: sqlite+aiosqlite:///<data_dir>/registry.db
    broker_url: str = ""  # default: the embedded SQLAlchemy transport on <data_dir>/broker.db
    result_backend_url: str = ""  # default: follows broker_url (redis) or <data_dir>/results.db
    model_cache_dir: Path | None = None  # converted weights; default <data_dir>/models

    # --- the gateway ---------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=1, le=65535)
    auth_mode: AuthMode = AuthMode.OPEN
    bootstrap_api_key: SecretStr | None = None  # stored hashed for owner `bootstrap_owner` at start-up
    bootstrap_owner: str = "admin"
    upstream_connect_timeout_seconds: float = 5.0
    upstream_read_timeout_seconds: float = 600.0
    # Replica choice (inference/routing.py): the policy, how many more in-flight requests than the least busy replica
    # the prefix's replica may have and still get the request, and the prefix index's block size and LRU bound.
    routing_policy: RoutingPolicy = RoutingPolicy.PREFIX_AFFINITY  # won in benchmarks/routing.py
    routing_max_imbalance: int = Field(default=4, ge=0)
    routing_prefix_block_chars: int = Field(default=256, ge=16)
    routing_prefix_index_blocks: int = Field(default=65536, ge=1)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)  # ": ping" comments on quiet completion streams
    async_task_result_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    # Request limits (api/limits.py): larger bodies get 413, slower bodies 408, larger headers 431, queries 414.
    max_request_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    request_body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_request_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_query_string_bytes: int = Field(default=8 * 1024, ge=256)
    # Async workers (`model-engine worker`): a task held by a worker that stopped renewing its lease (killed, lost
    # its network) goes back to the queue after this long. Running tasks renew every third of it, so it does not
    # bound how long a generation may take.
    async_task_visibility_timeout_seconds: int = Field(default=120, ge=3)
    async_worker_concurrency: int = Field(default=16, ge=1)  # tasks one worker process runs at once
    # At most this many of one endpoint's tasks run at once in one worker process (lower still when the endpoint's
    # max_workers * per_worker is lower), so a stalled endpoint leaves the other slots to other endpoints.
    async_endpoint_concurrency: int = Field(default=8, ge=1)
    async_task_max_attempts: int = Field(default=8, ge=1)  # tries on upstream 429/503/connection errors
    broker_key_prefix: str = ""  # Redis only: prefix of every broker and result key (several installs, one Redis)
    embedded_broker_polling_seconds: float = Field(default=0.05, gt=0, le=5)  # SQLite broker: idle poll interval
    demo_model: str = "smollm2-135m"  # created by `model-engine serve` when absent; "" disables it

    # --- files, object storage and jobs (batch completions, fine-tunes) --------------------------------------------
    object_store_url: str = ""  # default: file://<data_dir>/objects; production: s3://bucket/prefix
    s3_endpoint_url: str = ""  # S3-compatible stores other than AWS (MinIO, Ceph); credentials: boto3's own chain
    s3_region: str = ""
    file_max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)  # uploads larger than this answer 413
    batch_chunk_size: int = Field(default=16, ge=1, le=4096)  # prompts per result part: the unit of resumption
    # Prompts a batch worker keeps in the engine at once: enough to keep continuous batching full, few enough that
    # parts finish (and are written) one after another, so a restarted job loses little work.
    batch_max_in_flight_prompts: int = Field(default=128, ge=1)
    job_max_restarts: int = Field(default=3, ge=0)  # a job whose process dies is restarted (resuming) this often
    fine_tune_max_concurrent_per_tenant: int = Field(default=4, ge=1)  # queued or running fine-tunes; 429 past it
    fine_tune_max_runtime_seconds: int = Field(default=24 * 3600, ge=60)  # a longer fine-tune fails
    job_ttl_seconds_after_finished: int = Field(default=3600, ge=0)  # Kubernetes removes finished Jobs after this

    # --- tenants (docs/tenancy.md) -------------------------------------------------------------------------------
    # Defaults for every tenant; 0 = unlimited. `model-engine tenants set-limits` / PUT /v1/tenants/{t}/limits
    # override them per tenant.
    tenant_requests_per_minute: int = Field(default=0, ge=0)
    tenant_tokens_per_minute: int = Field(default=0, ge=0)  # generated tokens
    tenant_max_concurrent_requests: int = Field(default=0, ge=0)
    tenant_max_endpoints: int = Field(default=0, ge=0)
    tenant_max_jobs: int = Field(default=0, ge=0)  # concurrent batch and fine-tune jobs
    # Rate-limit counters shared by gateway replicas; "" = follow broker_url when it is Redis, else process memory.
    rate_limit_redis_url: str = ""
    api_key_cache_seconds: float = Field(default=30.0, ge=0)  # safety net; revocations are pushed within a second
    # Requests an endpoint takes at once from this gateway: ready replicas x per_worker x this; more wait in a
    # queue served fairly across tenants. 0 = no gateway queue (the engines queue first come, first served).
    fair_queue_overcommit: float = Field(default=2.0, ge=0)
    fair_queueing: bool = True  # false: the gateway queue is first come, first served
    usage_flush_seconds: float = Field(default=5.0, gt=0)

    # --- the orchestrator ----------------------------------------------------------------------------------------
    orchestrator: OrchestratorKind = OrchestratorKind.LOCAL
    reconcile_interval_seconds: float = Field(default=2.0, gt=0)
    # --- autoscaling (docs/autoscaling.md) ---------------------------------------------------------------------------
    # An endpoint with min_workers == 0 and no request for this long goes to zero workers; the next request wakes it.
    scale_to_zero_idle_seconds: float = Field(default=900.0, gt=0)
    # A request for an endpoint at zero waits this long at most for a replica, then gets 503 with Retry-After.
    cold_start_timeout_seconds: float = Field(default=600.0, gt=0)
    # Load (in-flight requests per ready replica vs per_worker) must call for more replicas this long before one is
    # added, and for fewer this long before one is removed: replicas follow load without flapping.
    autoscale_scale_up_window_seconds: float = Field(default=15.0, ge=0)
    autoscale_scale_down_window_seconds: float = Field(default=300.0, ge=0)
    # A replica being removed gets no new requests and this long to finish the ones it has before it is stopped.
    autoscale_drain_timeout_seconds: float = Field(default=600.0, ge=0)
    inference_server_command: str = ""  # default: text-generation-launcher if on PATH, else the built-in server
    # Virtual environments of third-party engines (`make engines`), one per pinned version; outside the checkout so
    # every clone on this machine shares them.
    engines_dir: Path = Field(default_factory=_default_engines_dir)
    vllm_cpu_kv_cache_gib: int = Field(default=2, ge=1)  # VLLM_CPU_KVCACHE_SPACE of local vLLM replicas
    # Memory the built-in inference server keeps for the key/values of recent prompt prefixes; 0 turns it off.
    prefix_cache_mb: int = Field(default=256, ge=0)

    # --- Kubernetes ----------------------------------------------------------------------------------------------
    kubernetes_namespace: str = "llm-engine-endpoints"
    kubernetes_kubeconfig: Path | None = None  # unset: in-cluster config, then ~/.kube/config
    kubernetes_field_manager: str = "llm-engine"
    kubernetes_gpu_node_label: str = "k8s.amazonaws.com/accelerator"
    kubernetes_gpu_tolerations: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["nvidia.com/gpu"])
    kubernetes_keda_enabled: bool = False
    kubernetes_endpoint_service_account: str = "llm-engine-endpoint"
    kubernetes_hf_token_secret: str = ""  # Secret (key HF_TOKEN) mounted into TGI/vLLM pods when set
    # How the gateway reaches an endpoint's Service; {service} and {namespace} are filled in.
    kubernetes_service_url_template: str = "http://{service}.{namespace}.svc.cluster.local:80"
    # Route to each ready pod (from the endpoint's EndpointSlices, watched) instead of through the Service; needs
    # list/watch on endpointslices. The Service URL is still used while the watch is unavailable.
    kubernetes_pod_routing: bool = True
    tgi_image_repository: str = "ghcr.io/huggingface/text-generation-inference"
    vllm_image_repository: str = "vllm/vllm-openai"
    builtin_image_repository: str = "ghcr.io/llm-engine/model-engine-inference"
    builtin_image_tag: str = __version__  # the built-in server image is released with the platform
    # Endpoints with gpus == 0 run the built-in server (a TGI and OpenAI peer) instead of the CUDA-only engine images.
    kubernetes_builtin_engine_without_gpus: bool = True
    kubernetes_termination_grace_seconds: int = Field(default=600, ge=30)  # lets in-flight streams finish
    # Per-pod custom metric (served by prometheus-adapter) the HPA targets with `per_worker` concurrent requests.
    kubernetes_hpa_metric_name: str = "llm_engine_concurrent_requests"
    # KEDA (min_workers == 0): Prometheus query of queued + in-flight requests; {endpoint_id} and {namespace} filled in.
    kubernetes_keda_prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # The gateways' demand for the endpoint: requests in flight plus requests held while it wakes from zero.
    kubernetes_keda_query_template: str = (
        '(sum(llm_engine_endpoint_inflight_requests{{endpoint_id="{endpoint_id}"}}) or vector(0))'
        ' + (sum(llm_engine_endpoint_held_requests{{endpoint_id="{endpoint_id}"}}) or vector(0))'
    )
    # Init-container images that copy a checkpoint_path from object storage; credentials come from the pod's
    # ServiceAccount (IRSA / Workload Identity) or the Secret below (envFrom, optional).
    kubernetes_s3_download_image: str = "amazon/aws-cli:2.22.35"
    kubernetes_gcs_download_image: str = "google/cloud-sdk:502.0.0-slim"
    kubernetes_checkpoint_credentials_secret: str = ""
    kubernetes_watch_timeout_seconds: int = Field(default=300, gt=0)  # server-side; watches resume after it
    kubernetes_leader_lease_name: str = "llm-engine-orchestrator"
    # `inference_framework_image_tag: "latest"` resolves through this map (framework -> tag).
    latest_image_tags: dict[str, str] = Field(
        default_factory=lambda: {"text_generation_inference": "3.3.6", "vllm": "v0.11.0"}
    )
    # Model zoo entries added or replaced by the operator (JSON object: model_name -> ModelZooOverride fields).
    model_zoo_overrides: dict[str, ModelZooOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fill_derived_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'registry.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if not self.result_backend_url:
            if self.broker_url.startswith(("redis://", "rediss://")):
                self.result_backend_url = self.broker_url
            else:
                self.result_backend_url = f"db+sqlite:///{self.data_dir / 'results.db'}"
        if not self.rate_limit_redis_url and self.broker_url.startswith(("redis://", "rediss://")):
            self.rate_limit_redis_url = self.broker_url
        if self.model_cache_dir is None:
            self.model_cache_dir = self.data_dir / "models"
        if not self.object_store_url:
            self.object_store_url = (self.data_dir / "objects").resolve().as_uri()
        return self

    @model_validator(mode="before")
    @classmethod
    def _split_tolerations(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("kubernetes_gpu_tolerations")
            if isinstance(raw, str):
                data["kubernetes_gpu_tolerations"] = [t.strip() for t in raw.split(",") if t.strip()]
        return data

    @property
    def models_dir(self) -> Path:
        assert self.model_cache_dir is not None  # filled in by the validator
        return self.model_cache_dir

    def storage_config(self) -> StorageConfig:
        return StorageConfig(
            url=self.object_store_url.rstrip("/"),
            s3_endpoint_url=self.s3_endpoint_url,
            s3_region=self.s3_region,
            allow_local_paths=self.orchestrator is OrchestratorKind.LOCAL,
        )

    def tenant_limits(self) -> TenantLimits:
        """Every tenant's default limits (a tenant's own overrides replace them one by one)."""
        return TenantLimits(**{limit.value: getattr(self, f"tenant_{limit.value}") for limit in Limit})

    def scaling_policy(self) -> ScalingPolicy:
        return ScalingPolicy(
            idle_seconds=self.scale_to_zero_idle_seconds,
            scale_up_window_seconds=self.autoscale_scale_up_window_seconds,
            scale_down_window_seconds=self.autoscale_scale_down_window_seconds,
        )

    def model_zoo(self) -> ModelZoo:
        """The default zoo with ``model_zoo_overrides`` applied: an override replaces the entry of the same name."""
        overrides = tuple(
            ZooEntry(
                name=name,
                hf_repo=entry.hf_repo,
                frameworks=tuple(entry.frameworks),
                context_length=entry.context_length,
                gpus=entry.gpus,
                gpu_type=entry.gpu_type,
                memory=entry.memory,
                cpus=entry.cpus,
            )
            for name, entry in self.model_zoo_overrides.items()
        )
        kept = tuple(entry for entry in DEFAULT_ZOO if entry.name not in self.model_zoo_overrides)
        return ModelZoo(kept + overrides)


def load_settings() -> Settings:
    """Read the settings from the environment; raises ``pydantic.ValidationError`` with every problem at once."""
    return Settings()
