"""Every manifest the orchestrator can generate passes ``kubernetes-validate`` (strict) for 1.30 and the newest version.

The matrix: built-in / TGI / vLLM × 0, 1, 8 GPUs × every gpu_type × min_workers 0 (with and without KEDA) / 1 × no
checkpoint, s3://, gs://, pvc://. Identical manifests are validated once (Service and PDB rarely differ).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from model_engine_server.config import Settings
from model_engine_server.domain import rules
from model_engine_server.domain.entities import InferenceFramework
from model_engine_server.domain.exceptions import OrchestrationError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.orchestration.kubernetes import naming
from model_engine_server.orchestration.kubernetes.engines import EngineKind
from model_engine_server.orchestration.kubernetes.manifests import build_manifests, owned_by
from tests.kubernetes.conftest import make_endpoint

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
GPU_TYPES = sorted(rules.GPU_TYPES)  # every type the API accepts
CHECKPOINTS = [None, "s3://models/llama-3-8b/", "gs://models/llama-3-8b", "pvc://model-store/llama-3-8b"]
ENGINES = {
    EngineKind.BUILTIN: InferenceFramework.TEXT_GENERATION_INFERENCE,
    EngineKind.TGI: InferenceFramework.TEXT_GENERATION_INFERENCE,
    EngineKind.VLLM: InferenceFramework.VLLM,
}

# KEDA's CRD is not in kubernetes-validate; this is the part of its ScaledObject schema (keda.sh/v1alpha1) we use.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}


@functools.cache
def strict_validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's own strict schemas, compiled once per kind: ``kubernetes_validate.validate`` rebuilds
    the validator on every call, which made the ~1,700 validations of the matrix take a minute."""
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    base = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv_utils.schema_contents(f"{base}/{kind.lower()}-{group}.json", version)
    definitions = kv_utils.schema_contents(f"{base}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def matrix() -> list[tuple[EngineKind, int, str | None, int, bool, str | None]]:
    cases = []
    for engine, gpus, min_workers, keda, checkpoint in itertools.product(
        ENGINES, (0, 1, 8), (0, 1), (False, True), CHECKPOINTS
    ):
        if min_workers == 1 and keda:
            continue  # KEDA only changes anything at min_workers == 0
        for gpu_type in GPU_TYPES if gpus else [None]:
            cases.append((engine, gpus, gpu_type, min_workers, keda, checkpoint))
    return cases


def render(
    tmp_path: Path,
    engine: EngineKind,
    gpus: int,
    gpu_type: str | None,
    min_workers: int,
    keda: bool,
    checkpoint: str | None,
) -> list[dict[str, Any]]:
    settings = Settings(
        data_dir=tmp_path,
        kubernetes_keda_enabled=keda,
        kubernetes_hf_token_secret="hf-token",
        kubernetes_checkpoint_credentials_secret="s3-creds" if checkpoint else "",
    )
    endpoint = make_endpoint(
        inference_framework=ENGINES[engine],
        gpus=gpus,
        gpu_type=gpu_type,
        num_shards=max(1, gpus),
        min_workers=min_workers,
        max_workers=3,
        checkpoint_path=checkpoint,
        storage="200Gi" if checkpoint else None,
        quantize="awq" if gpus == 8 else None,
        model_name="llama-3-70b-instruct" if gpus == 8 else "llama-3-8b-instruct",
    )
    rendered = build_manifests(endpoint, settings, ModelZoo(), engine=engine)
    uid = "6f1c7a2e-0000-4000-8000-000000000000"
    return [rendered.deployment, *(owned_by(child, rendered.name, uid) for child in rendered.children())]


def test_the_whole_matrix_validates_strictly(tmp_path: Path) -> None:
    cases = matrix()
    assert len(cases) == 3 * (1 + 2 * len(GPU_TYPES)) * 3 * len(CHECKPOINTS)
    seen: set[str] = set()
    kinds: set[str] = set()
    for case in cases:
        for manifest in render(tmp_path, *case):
            text = json.dumps(manifest, sort_keys=True)
            if text in seen:
                continue
            seen.add(text)
            kinds.add(manifest["kind"])
            if manifest["kind"] == "ScaledObject":
                jsonschema.validate(manifest, SCALED_OBJECT_SCHEMA)
                continue
            for version in VERSIONS:
                errors = list(strict_validator(version, manifest["kind"], manifest["apiVersion"]).iter_errors(manifest))
                assert not errors, f"{case} {manifest['kind']} invalid for {version}: {errors[0].message}"
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ScaledObject"}


@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_validate_itself_accepts_each_kind_and_is_strict(tmp_path: Path, version: str) -> None:
    for manifest in render(tmp_path, EngineKind.TGI, 8, "nvidia-hopper-h100", 1, False, "s3://b/p"):
        assert kubernetes_validate.validate(manifest, version, strict=True)
    deployment = render(tmp_path, EngineKind.TGI, 1, "nvidia-ampere-a10", 1, False, None)[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)
    assert list(strict_validator(version, "Deployment", "apps/v1").iter_errors(deployment))


def container(tmp_path: Path, engine: EngineKind, gpus: int = 1, checkpoint: str | None = None) -> dict[str, Any]:
    deployment = render(tmp_path, engine, gpus, "nvidia-ampere-a100" if gpus else None, 1, False, checkpoint)[0]
    engine_container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return engine_container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_tgi_container(tmp_path: Path) -> None:
    engine = container(tmp_path, EngineKind.TGI, gpus=8)
    assert engine["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.6"  # "latest" resolved by settings
    assert engine["command"] == ["text-generation-launcher"]
    args = engine["args"]
    assert flag(args, "--model-id") == "meta-llama/Meta-Llama-3-70B-Instruct"
    assert (flag(args, "--num-shard"), flag(args, "--max-input-tokens"), flag(args, "--max-total-tokens")) == (
        "8",
        "7168",
        "8192",
    )
    assert flag(args, "--quantize") == "awq" and flag(args, "--port") == "8080"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == engine["resources"]["requests"]["nvidia.com/gpu"] == "8"
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}} in engine["env"]


def test_vllm_container(tmp_path: Path) -> None:
    engine = container(tmp_path, EngineKind.VLLM)
    assert engine["image"] == "vllm/vllm-openai:v0.11.0"
    args = engine["args"]
    assert (flag(args, "--model"), flag(args, "--tensor-parallel-size"), flag(args, "--served-model-name")) == (
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "1",
        "llama-3-8b-instruct",
    )


def test_builtin_server_runs_cpu_endpoints_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    rendered = build_manifests(make_endpoint(gpus=0, gpu_type=None, model_name="smollm2-135m"), settings, ModelZoo())
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["model-engine", "inference-server"]
    assert flag(pod["containers"][0]["args"], "--model-id") == "smollm2-135m"  # a zoo name the server resolves
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["requests"]


def test_builtin_server_pods_get_the_prefix_cache_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, prefix_cache_mb=64)
    rendered = build_manifests(make_endpoint(gpus=0, gpu_type=None, model_name="smollm2-135m"), settings, ModelZoo())
    engine = rendered.deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LLM_ENGINE_PREFIX_CACHE_MB", "value": "64"} in engine["env"]
    assert all(v["name"] != "LLM_ENGINE_PREFIX_CACHE_MB" for v in container(tmp_path, EngineKind.TGI)["env"])


def test_pod_shape_for_gpus_and_slow_loads(tmp_path: Path) -> None:
    deployment = render(tmp_path, EngineKind.TGI, 1, "nvidia-hopper-h100", 1, False, None)[0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["nodeSelector"] == {"k8s.amazonaws.com/accelerator": "nvidia-hopper-h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "llm-engine-endpoint" and pod["terminationGracePeriodSeconds"] == 600
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in pod["volumes"]
    engine = pod["containers"][0]
    startup = engine["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60  # a big model may load for half an hour
    assert engine["readinessProbe"]["httpGet"]["path"] == engine["livenessProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize(
    ("checkpoint", "init_command"),
    [
        ("s3://bucket/llama/", ["aws", "s3", "sync", "--only-show-errors", "s3://bucket/llama/", "/models/checkpoint"]),
        ("gs://bucket/llama", ["gcloud", "storage", "rsync", "--recursive", "gs://bucket/llama", "/models/checkpoint"]),
        ("pvc://model-store/llama", None),
    ],
)
def test_checkpoints_are_downloaded_or_mounted_instead_of_a_hub_download(
    tmp_path: Path, checkpoint: str, init_command: list[str] | None
) -> None:
    deployment = render(tmp_path, EngineKind.VLLM, 1, "nvidia-ampere-a10", 1, False, checkpoint)[0]
    pod = deployment["spec"]["template"]["spec"]
    assert flag(pod["containers"][0]["args"], "--model") == "/models/checkpoint"
    if init_command is None:
        assert "initContainers" not in pod
        assert {"name": "checkpoint", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in pod[
            "volumes"
        ]
        assert {"name": "checkpoint", "mountPath": "/models/checkpoint", "readOnly": True, "subPath": "llama"} in pod[
            "containers"
        ][0]["volumeMounts"]
    else:
        assert pod["initContainers"][0]["command"] == init_command
        assert pod["initContainers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_unusable_checkpoint_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OrchestrationError, match="s3://BUCKET/PATH"):
        build_manifests(make_endpoint(checkpoint_path="/home/me/llama"), Settings(data_dir=tmp_path), ModelZoo())


@pytest.mark.parametrize(
    "name",
    [
        "llama-chat",
        "Llama_Chat.v2",
        "x" * 200,
        "--édition spéciale--",
        "1-starts-with-digit",
        "---",
    ],
)
def test_names_are_valid_stable_and_unique(name: str) -> None:
    endpoint = make_endpoint(name)
    resource = naming.resource_name(endpoint)
    assert len(resource) <= 63
    assert kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": resource}, "spec": {"ports": [{"port": 80}]}},
        VERSIONS[0],
        strict=True,
    )
    assert resource[0].isalpha() and resource[-1].isalnum() and resource == resource.lower()
    assert naming.resource_name(make_endpoint(name, revision=7)) == resource  # updates keep the name
    twin = make_endpoint(name)
    twin.id = endpoint.id + "-other"
    assert naming.resource_name(twin) != resource  # same name, another endpoint: another object
