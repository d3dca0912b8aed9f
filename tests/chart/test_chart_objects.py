"""What the rendered chart does: hook ordering, RBAC, probes, security contexts, settings and secrets."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.main import get_command

from model_engine_server.cli import app as cli_app
from model_engine_server.config import AuthMode, OrchestratorKind, Settings, load_settings
from model_engine_server.orchestration.kubernetes.rbac import REQUIRED_RULES, ROUTING_RULES, required_rules
from tests.chart.conftest import (
    CHART_DIR,
    CI_VALUES_FILES,
    RELEASE_NAMESPACE,
    Obj,
    Rendered,
    ci_values,
    container,
    containers,
    deep_merge,
    env_of,
    full_name,
    hook_annotations,
    pod_spec,
)

CONTROL_PLANE = ("gateway", "worker", "orchestrator")
MIGRATE_JOB = full_name("migrate")
CHART_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]

# Settings the chart leaves at their defaults on purpose; every other setting is set by the chart.
NOT_SET_BY_CHART = {
    "host": "the gateway's --host flag",
    "port": "the gateway's --port flag",
    "model_cache_dir": "the control plane loads no model weights",
    "demo_model": "only `model-engine serve` on one machine creates the demo endpoint",
    "inference_server_command": "the local orchestrator's; endpoints run as pods here",
    "kubernetes_kubeconfig": "in-cluster config from the ServiceAccount token",
    "embedded_broker_polling_seconds": "the embedded SQLite broker's; the chart's broker is Redis",
    "rate_limit_redis_url": "follows LLM_ENGINE_BROKER_URL: the limit counters share the broker's Redis",
    "engines_dir": "the local orchestrator's managed engine venvs; on Kubernetes each engine is its image",
    "vllm_cpu_kv_cache_gib": "local vLLM-CPU replicas only; vLLM pods take their own engine arguments",
    "autoscale_scale_up_window_seconds": "the local orchestrator's autoscaler; on Kubernetes the HPA scales",
    "autoscale_scale_down_window_seconds": "the local orchestrator's autoscaler; on Kubernetes the HPA scales",
    "autoscale_drain_timeout_seconds": "local replicas; pods get terminationGracePeriodSeconds",
}
# Stand-ins for Secrets the operator creates (external databases, own bootstrap key).
EXTERNAL_SECRET_VALUES = {
    "LLM_ENGINE_DATABASE_URL": "postgresql+asyncpg://llm:pw@db.example.internal:5432/llm_engine",
    "LLM_ENGINE_BROKER_URL": "redis://:pw@redis.example.internal:6379/0",
    "LLM_ENGINE_RESULT_BACKEND_URL": "redis://:pw@redis.example.internal:6379/1",
    "LLM_ENGINE_BOOTSTRAP_API_KEY": "an-operator-chosen-bootstrap-key-0123456789",
}

ci_files = pytest.mark.parametrize("values", CI_VALUES_FILES, ids=lambda p: p.stem)
Render = Callable[..., Rendered]


def _deployment(rendered: Rendered, component: str) -> Obj:
    return rendered.get("Deployment", full_name(component))


def _control_plane_containers(rendered: Rendered) -> list[Obj]:
    return [container(_deployment(rendered, c), c) for c in CONTROL_PLANE]


def _secret_refs(c: Obj) -> set[str]:
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
    }
    return refs | {s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s}


# --- hooks: migrations run before anything new starts ---------------------------------------------------------------


@ci_files
def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(render: Render, values: Path) -> None:
    rendered = render(values)
    job = rendered.get("Job", MIGRATE_JOB)
    hooks = hook_annotations(job)
    migrate = container(job, "migrate")

    assert hooks is not None and hooks[0] == {"pre-install", "pre-upgrade"}
    assert [*migrate["command"], *migrate["args"]] == ["model-engine", "migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # A failed migration Job stays for `kubectl logs`; a succeeded one is cleaned up.
    policy = set(job["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(","))
    assert policy == {"before-hook-creation", "hook-succeeded"}


@ci_files
def test_control_plane_is_not_a_hook_so_it_starts_after_migrations(render: Render, values: Path) -> None:
    rendered = render(values)

    for component in CONTROL_PLANE:
        assert hook_annotations(_deployment(rendered, component)) is None


@ci_files
def test_everything_the_migration_job_needs_exists_before_it(render: Render, values: Path) -> None:
    """Pre-install hooks run before the release's other objects exist: the Job may only use hooks of lower weight
    or Secrets the operator created."""
    rendered = render(values)
    job = rendered.get("Job", MIGRATE_JOB)
    job_weight = hook_annotations(job)[1]  # type: ignore[index]
    chart_secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}

    for name in set().union(*(_secret_refs(c) for c in containers(job))):
        if name in chart_secrets:
            hooks = hook_annotations(chart_secrets[name])
            assert hooks is not None and "pre-install" in hooks[0] and hooks[1] < job_weight, name
    assert pod_spec(job).get("serviceAccountName") is None  # the release's ServiceAccount does not exist yet
    assert pod_spec(job)["automountServiceAccountToken"] is False


def test_quick_start_database_is_created_once_before_migrations(render: Render) -> None:
    rendered = render(ci_values("default"))
    job_weight = hook_annotations(rendered.get("Job", MIGRATE_JOB))[1]  # type: ignore[index]
    postgres = full_name("postgresql")

    for kind in ("Secret", "Service", "StatefulSet"):
        hooks = hook_annotations(rendered.get(kind, postgres))
        # pre-install only: an upgrade must not delete and re-create the database.
        assert hooks is not None and hooks[0] == {"pre-install"} and hooks[1] < job_weight, kind
    wait = container(rendered.get("Job", MIGRATE_JOB), "wait-for-postgresql")
    assert f"pg_isready -h {postgres} -p 5432" in wait["command"][-1]


def test_external_database_needs_no_chart_hooks(render: Render) -> None:
    rendered = render(ci_values("external-databases"))
    hooked = [o["metadata"]["name"] for o in rendered.objects if hook_annotations(o) is not None]

    assert hooked == [MIGRATE_JOB]
    assert rendered.of_kind("StatefulSet") == []
    assert _secret_refs(container(rendered.get("Job", MIGRATE_JOB), "migrate")) == {"llm-engine-database"}


# --- RBAC -----------------------------------------------------------------------------------------------------------


def _grants(rules: list[dict[str, list[str]]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: equal grants compare equal however the rules are split."""
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_role_grants_exactly_what_the_orchestrator_uses(render: Render) -> None:
    rendered = render(ci_values("default"))
    role = rendered.get("Role", full_name("orchestrator"))

    assert role["metadata"]["namespace"] == "llm-engine-endpoints"
    assert _grants(role["rules"]) == _grants(required_rules(keda_enabled=False))


def test_role_with_keda_grants_exactly_required_rules(render: Render) -> None:
    rendered = render(ci_values("gpu"))
    role = rendered.get("Role", full_name("orchestrator"))

    assert role["metadata"]["namespace"] == "llm-endpoints"
    assert _grants(role["rules"]) == _grants(REQUIRED_RULES)


def test_routing_role_grants_exactly_what_pod_routing_uses(render: Render) -> None:
    rendered = render(ci_values("default"))
    role = rendered.get("Role", full_name("routing"))

    assert role["metadata"]["namespace"] == "llm-engine-endpoints"
    assert _grants(role["rules"]) == _grants(ROUTING_RULES)
    assert rendered.of_kind("Role") == [rendered.get("Role", full_name("orchestrator")), role]


def test_without_pod_routing_there_is_no_routing_role(render: Render) -> None:
    rendered = render(ci_values("default"), sets=["endpoints.podRouting=false"])

    assert [r["metadata"]["name"] for r in rendered.of_kind("Role")] == [full_name("orchestrator")]
    assert env_of(container(_deployment(rendered, "gateway"), "gateway"))["LLM_ENGINE_KUBERNETES_POD_ROUTING"] == {
        "name": "LLM_ENGINE_KUBERNETES_POD_ROUTING",
        "value": "false",
    }


@ci_files
def test_roles_are_bound_to_the_control_plane_service_account_only(render: Render, values: Path) -> None:
    rendered = render(values)
    roles = {role["metadata"]["name"]: role for role in rendered.of_kind("Role")}
    accounts = {pod_spec(_deployment(rendered, c))["serviceAccountName"] for c in CONTROL_PLANE}
    account = accounts.pop()
    assert accounts == set()  # all three components share the one account

    assert len(rendered.of_kind("RoleBinding")) == len(roles)
    for binding in rendered.of_kind("RoleBinding"):
        role = roles[binding["roleRef"]["name"]]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": RELEASE_NAMESPACE}]
        assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])


@ci_files
def test_endpoint_pods_get_their_own_account_without_permissions(render: Render, values: Path) -> None:
    rendered = render(values)
    env = env_of(container(_deployment(rendered, "orchestrator"), "orchestrator"))
    name = env["LLM_ENGINE_KUBERNETES_ENDPOINT_SERVICE_ACCOUNT"]["value"]
    namespace = env["LLM_ENGINE_KUBERNETES_NAMESPACE"]["value"]
    account = rendered.get("ServiceAccount", name)
    bound = {s["name"] for b in rendered.of_kind("RoleBinding") for s in b["subjects"]}

    assert account["metadata"]["namespace"] == namespace
    assert account["automountServiceAccountToken"] is False
    assert name not in bound


def test_rbac_can_be_left_to_the_operator(render: Render) -> None:
    rendered = render(sets=["rbac.create=false"])

    assert rendered.of_kind("Role") == [] and rendered.of_kind("RoleBinding") == []


def test_endpoint_namespace_survives_uninstall(render: Render) -> None:
    namespace = render(ci_values("default")).get("Namespace", "llm-engine-endpoints")

    assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


# --- probes, ports, scaling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [5000, 8080])
def test_gateway_probes_and_port_agree(render: Render, port: int) -> None:
    rendered = render(sets=[f"gateway.port={port}"])
    gateway = container(_deployment(rendered, "gateway"), "gateway")
    (http,) = gateway["ports"]

    assert gateway["args"] == ["gateway", "--host", "0.0.0.0", "--port", str(port)]
    assert http == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = _deployment(rendered, "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_gateway_autoscales_between_the_configured_bounds(render: Render) -> None:
    rendered = render(ci_values("gpu"))
    hpa = rendered.get("HorizontalPodAutoscaler", full_name("gateway"))

    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": full_name("gateway"),
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert "replicas" not in _deployment(rendered, "gateway")["spec"]  # the HPA owns the count


def test_gateway_without_autoscaling_has_fixed_replicas(render: Render) -> None:
    rendered = render(ci_values("cpu-only"))

    assert rendered.of_kind("HorizontalPodAutoscaler") == []
    assert _deployment(rendered, "gateway")["spec"]["replicas"] == 1


@pytest.mark.parametrize(("values", "replicas", "strategy"), [("default", 1, "Recreate"), ("gpu", 2, "RollingUpdate")])
def test_orchestrator_never_runs_two_unelected_replicas(
    render: Render, values: str, replicas: int, strategy: str
) -> None:
    orchestrator = _deployment(render(ci_values(values)), "orchestrator")

    assert orchestrator["spec"]["replicas"] == replicas
    assert orchestrator["spec"]["strategy"]["type"] == strategy


def test_control_plane_commands_exist_in_the_cli(render: Render) -> None:
    rendered = render(ci_values("default"))
    commands = set(get_command(cli_app).commands)  # type: ignore[attr-defined]
    used = {
        c["args"][0]
        for c in [*_control_plane_containers(rendered), container(rendered.get("Job", MIGRATE_JOB), "migrate")]
    }

    assert used == {"gateway", "worker", "orchestrator", "migrate"}
    assert used <= commands


# --- security -------------------------------------------------------------------------------------------------------


@ci_files
def test_every_pod_runs_as_non_root_with_a_locked_down_container(render: Render, values: Path) -> None:
    for workload in render(values).workloads():
        pod = pod_spec(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in containers(workload):
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, c["name"]
            assert context["readOnlyRootFilesystem"] is True, c["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, c["name"]


@ci_files
def test_every_container_has_requests_and_a_memory_limit(render: Render, values: Path) -> None:
    for workload in render(values).workloads():
        for c in containers(workload):
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            assert "memory" in c["resources"]["limits"], c["name"]


@ci_files
def test_read_only_control_plane_has_writable_scratch(render: Render, values: Path) -> None:
    rendered = render(values)
    for workload in [*(_deployment(rendered, c) for c in CONTROL_PLANE), rendered.get("Job", MIGRATE_JOB)]:
        main = pod_spec(workload)["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        data_dir = env_of(main)["LLM_ENGINE_DATA_DIR"]["value"]
        for path in ("/tmp", data_dir):
            assert "emptyDir" in volumes[mounts[path]], (workload["metadata"]["name"], path)


@ci_files
def test_only_the_control_plane_gets_an_api_token(render: Render, values: Path) -> None:
    rendered = render(values)
    for workload in rendered.workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in CONTROL_PLANE:
            assert pod_spec(workload)["automountServiceAccountToken"] is False, workload["metadata"]["name"]


# --- settings and secrets -------------------------------------------------------------------------------------------


def _settings_from_env(env: dict[str, Obj], rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Load Settings exactly as the container would, with Secrets resolved from the chart or the stand-ins above."""
    generated = {s["metadata"]["name"]: s.get("stringData", {}) for s in rendered.of_kind("Secret")}
    for name in [n for n in os.environ if n.startswith("LLM_ENGINE_")]:
        monkeypatch.delenv(name)
    for name, entry in env.items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        if ref["name"] in generated:
            monkeypatch.setenv(name, generated[ref["name"]][ref["key"]])
        else:
            monkeypatch.setenv(name, EXTERNAL_SECRET_VALUES[name])
    return load_settings()


@ci_files
def test_environment_is_valid_settings_that_follow_the_values(
    render: Render, values: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(values)
    chart_values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    overrides = yaml.safe_load(values.read_text()) or {}
    endpoints = deep_merge(chart_values, overrides)["endpoints"]
    env = env_of(container(_deployment(rendered, "gateway"), "gateway"))
    settings = _settings_from_env({k: v for k, v in env.items() if k.startswith("LLM_ENGINE_")}, rendered, monkeypatch)

    assert settings.orchestrator is OrchestratorKind.KUBERNETES
    assert settings.auth_mode is AuthMode.KEYS
    assert settings.bootstrap_api_key is not None
    assert settings.kubernetes_namespace == endpoints["namespace"]
    assert settings.kubernetes_gpu_tolerations == endpoints["gpuTolerations"]
    assert settings.kubernetes_keda_enabled is endpoints["keda"]["enabled"]
    assert settings.kubernetes_builtin_engine_without_gpus is endpoints["builtinEngineWithoutGpus"]
    assert settings.kubernetes_keda_query_template == endpoints["keda"]["queryTemplate"]
    latest = overrides.get("inferenceImages", {}).get("latestTags", chart_values["inferenceImages"]["latestTags"])
    assert settings.latest_image_tags == latest
    assert set(settings.model_zoo_overrides) == set(overrides.get("modelZoo", {}))
    zoo = settings.model_zoo()
    for name, entry in overrides.get("modelZoo", {}).items():
        assert zoo.require(name).hf_repo == entry["hf_repo"]
    assert "smollm2-135m" in zoo.names()  # overrides add to the defaults
    builtin_tag = overrides.get("inferenceImages", {}).get("builtin", {}).get("tag") or CHART_VERSION
    assert settings.builtin_image_tag == builtin_tag
    assert make_url(settings.database_url).drivername == "postgresql+asyncpg"
    assert settings.broker_url.startswith("redis://") and settings.result_backend_url.startswith("redis://")


def test_quick_start_urls_point_at_the_chart_databases(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render(ci_values("default"))
    env = env_of(container(_deployment(rendered, "gateway"), "gateway"))
    settings = _settings_from_env({k: v for k, v in env.items() if k.startswith("LLM_ENGINE_")}, rendered, monkeypatch)
    database = make_url(settings.database_url)
    postgres_port = rendered.get("Service", full_name("postgresql"))["spec"]["ports"][0]["port"]
    redis_port = rendered.get("Service", full_name("redis"))["spec"]["ports"][0]["port"]

    assert (database.host, database.port, database.database) == (full_name("postgresql"), postgres_port, "llm_engine")
    assert (
        settings.broker_url.startswith("redis://:") and f"@{full_name('redis')}:{redis_port}/0" in settings.broker_url
    )


def test_every_setting_is_set_by_the_chart_or_deliberately_left(render: Render) -> None:
    set_by_chart: set[str] = set()
    for values in CI_VALUES_FILES:
        rendered = render(values)
        for c in _control_plane_containers(rendered):
            set_by_chart |= {n.removeprefix("LLM_ENGINE_").lower() for n in env_of(c) if n.startswith("LLM_ENGINE_")}

    assert set_by_chart - set(Settings.model_fields) == set(), "the chart sets variables no setting reads"
    missing = set(Settings.model_fields) - set_by_chart - set(NOT_SET_BY_CHART)
    assert missing == set(), "new settings: give each a chart value (and docs/chart-values.md) or list it above"
    assert set_by_chart.isdisjoint(NOT_SET_BY_CHART)


@ci_files
def test_control_plane_components_share_one_configuration(render: Render, values: Path) -> None:
    rendered = render(values)
    envs = [c["env"] for c in _control_plane_containers(rendered)]

    assert envs[0] == envs[1] == envs[2]
    images = {c["image"] for c in _control_plane_containers(rendered)}
    assert images == {f"ghcr.io/llm-engine/model-engine:{CHART_VERSION}"}


@ci_files
def test_credentials_come_from_secrets_never_from_values(render: Render, values: Path) -> None:
    rendered = render(values)
    for c in [*_control_plane_containers(rendered), container(rendered.get("Job", MIGRATE_JOB), "migrate")]:
        env = env_of(c)
        for name in ("LLM_ENGINE_DATABASE_URL", "LLM_ENGINE_BROKER_URL", "LLM_ENGINE_BOOTSTRAP_API_KEY"):
            if name in env:
                assert set(env[name]) == {"name", "valueFrom"}, (c["name"], name)
                assert set(env[name]["valueFrom"]) == {"secretKeyRef"}


def test_external_secrets_are_referenced_by_the_configured_names(render: Render) -> None:
    rendered = render(ci_values("external-databases"))
    env = env_of(container(_deployment(rendered, "worker"), "worker"))

    def ref(name: str) -> tuple[str, str]:
        secret = env[name]["valueFrom"]["secretKeyRef"]
        return secret["name"], secret["key"]

    assert ref("LLM_ENGINE_DATABASE_URL") == ("llm-engine-database", "url")
    assert ref("LLM_ENGINE_BROKER_URL") == ("llm-engine-redis", "broker-url")
    assert ref("LLM_ENGINE_RESULT_BACKEND_URL") == ("llm-engine-redis", "result-backend-url")
    assert ref("LLM_ENGINE_BOOTSTRAP_API_KEY") == ("llm-engine-bootstrap", "key")
    assert env["LLM_ENGINE_BOOTSTRAP_OWNER"]["value"] == "platform-team"
    assert {s["metadata"]["name"] for s in rendered.of_kind("Secret")} == set()  # the chart generates none


def test_without_a_bootstrap_key_none_is_configured(render: Render) -> None:
    rendered = render(sets=["auth.bootstrapKey.generate=false"])

    assert "LLM_ENGINE_BOOTSTRAP_API_KEY" not in env_of(container(_deployment(rendered, "gateway"), "gateway"))
    assert full_name("bootstrap-key") not in {s["metadata"]["name"] for s in rendered.of_kind("Secret")}


def test_extra_env_and_scheduling_reach_the_pods(render: Render) -> None:
    rendered = render(ci_values("gpu"))
    gateway = _deployment(rendered, "gateway")

    for c in _control_plane_containers(rendered):
        assert env_of(c)["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "INFO"}
    assert pod_spec(gateway)["nodeSelector"] == {"node-role/control-plane-workloads": "true"}
    assert pod_spec(gateway)["tolerations"][0]["key"] == "control-plane-workloads"
    assert "podAntiAffinity" in pod_spec(_deployment(rendered, "orchestrator"))["affinity"]
    assert "nodeSelector" not in pod_spec(_deployment(rendered, "worker"))
