"""The batch/v1 Job a batch-completion or fine-tune job becomes: strictly valid, and shaped as the job asks."""

from __future__ import annotations

from datetime import UTC, datetime

import kubernetes_validate
import pytest

from model_engine_server.config import Settings
from model_engine_server.domain.jobs import EXIT_JOB_ERROR, Job, JobKind, JobResources, JobStatus, RunState
from model_engine_server.orchestration.kubernetes.jobs import job_manifest, observation
from tests.kubernetes.test_manifests import VERSIONS


def _job(gpus: int, kind: JobKind = JobKind.BATCH_COMPLETION) -> Job:
    now = datetime.now(UTC)
    return Job(
        id="job-0123456789abcdef",
        kind=kind,
        owner="team-a",
        spec={},
        status=JobStatus.QUEUED,
        created_at=now,
        expires_at=now,
        parallelism=3,
        max_runtime_sec=7200,
        resources=JobResources(cpus="4", gpus=gpus, memory="24Gi", gpu_type="nvidia-ampere-a10" if gpus else None),
    )


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("gpus", [0, 2])
@pytest.mark.parametrize("kind", list(JobKind))
def test_job_manifests_validate_strictly(tmp_path: object, version: str, gpus: int, kind: JobKind) -> None:
    settings = Settings(object_store_url="s3://bucket/llm-engine", orchestrator="kubernetes")
    manifest = job_manifest(settings, _job(gpus, kind))
    assert kubernetes_validate.validate(manifest, version, strict=True)


def test_job_spec_follows_the_request() -> None:
    settings = Settings(object_store_url="s3://bucket/llm-engine", job_ttl_seconds_after_finished=600)
    spec = job_manifest(settings, _job(gpus=2))["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["activeDeadlineSeconds"] == 7200 and spec["ttlSecondsAfterFinished"] == 600
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["batch-run", "--job-id", "job-0123456789abcdef"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {settings.kubernetes_gpu_node_label: "nvidia-ampere-a10"}
    assert {"name": "LLM_ENGINE_OBJECT_STORE_URL", "value": "s3://bucket/llm-engine"} in container["env"]


def test_job_conditions_become_run_states() -> None:
    assert observation(None).state is RunState.MISSING
    assert observation({"status": {"active": 2}}).state is RunState.RUNNING
    assert observation({"status": {}}).state is RunState.PENDING
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert observation(done).state is RunState.SUCCEEDED
    late = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert observation(late).reason == "runtime exceeded (activeDeadlineSeconds)"
    crashed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert observation(crashed).state is RunState.FAILED


def test_a_fine_tune_job_runs_the_trainer_with_the_whole_data_set() -> None:
    settings = Settings(object_store_url="s3://bucket/llm-engine")
    fine_tune = _job(gpus=1, kind=JobKind.FINE_TUNE)
    fine_tune.parallelism = 1
    spec = job_manifest(settings, fine_tune)["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"] == ["fine-tune-run", "--job-id", "job-0123456789abcdef"]
    assert (spec["completions"], spec["parallelism"]) == (1, 1)
    # The trainer resumes from the checkpoint in object storage, which the Job's pods reach through the same setting.
    assert {"name": "LLM_ENGINE_OBJECT_STORE_URL", "value": "s3://bucket/llm-engine"} in container["env"]
    # An evicted pod is replaced without using up a retry; a trainer that rejects its data is not retried at all.
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [EXIT_JOB_ERROR]
