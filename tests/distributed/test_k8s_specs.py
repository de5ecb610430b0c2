"""The Kubernetes Jobs the k8s executor would create for the distributed job's steps.

Rendered with dagster-k8s's own functions (`get_user_defined_k8s_config`,
`K8sContainerContext`, `construct_dagster_k8s_job`) from the real op tags; no cluster.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dagster import job, op, validate_run_config

from haste_dagster.defs.distributed import build_distributed_attempt_job
from haste_dagster.defs.executors import (
    K8sSettings,
    TrainingRouting,
    executor_from_env,
    k8s_executor_def,
    render_k8s_step_job,
)

ROUTING = TrainingRouting(
    gpus=1,
    node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "gpu"},
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ],
    cpu="4",
    memory="16Gi",
    image="registry.example/haste-dagster-cuda:1.2.3",
)
SETTINGS = K8sSettings(
    namespace="haste",
    image="registry.example/haste-dagster:1.2.3",
    env_secrets=("haste-database", "haste-llm"),
    env_config_maps=("haste-settings",),
    service_account="haste-runner",
    image_pull_policy="IfNotPresent",
)
DB_PASSWORD = "pg-pa55word"
API_KEY = "sk-never-in-a-pod-spec"


def _step_tags(step: str) -> dict[str, str]:
    distributed = build_distributed_attempt_job(rounds=1, candidates=2, routing=ROUTING)
    return dict(distributed.graph.node_named(step).tags)


def _container(rendered: dict[str, Any]) -> dict[str, Any]:
    containers = rendered["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@op
def noop() -> None:
    pass


def test_a_training_step_asks_for_a_gpu_on_the_gpu_node_pool() -> None:
    rendered = render_k8s_step_job(
        _step_tags("evaluate_candidate_1"), SETTINGS, step_key="evaluate_candidate_1[i1]"
    )
    pod = rendered["spec"]["template"]["spec"]
    container = _container(rendered)
    assert container["resources"] == {
        "limits": {"nvidia.com/gpu": "1"},
        "requests": {"cpu": "4", "memory": "16Gi"},
    }
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "pool": "gpu",
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert rendered["metadata"]["namespace"] == "haste"
    # Training steps run the CUDA build of the image; the rest keep the executor's image.
    assert container["image"] == "registry.example/haste-dagster-cuda:1.2.3"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod["serviceAccountName"] == "haste-runner"
    assert rendered["metadata"]["labels"]["dagster/op"] == "evaluate_candidate_1-i1"


def test_the_final_fit_and_the_baseline_are_training_steps_too() -> None:
    for step in ("start_attempt", "train_final_model"):
        container = _container(render_k8s_step_job(_step_tags(step), SETTINGS, step_key=step))
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_bookkeeping_steps_get_no_gpu_and_no_gpu_node_pool() -> None:
    for step in ("propose_candidates_1", "select_round_1"):
        rendered = render_k8s_step_job(_step_tags(step), SETTINGS, step_key=step)
        assert "dagster-k8s/config" not in _step_tags(step)
        assert not _container(rendered).get("resources")
        assert _container(rendered)["image"] == "registry.example/haste-dagster:1.2.3"
        pod = rendered["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod and "tolerations" not in pod


def test_step_pods_get_secrets_only_as_references(monkeypatch: pytest.MonkeyPatch) -> None:
    # Secrets present where the job is built must not be copied into the pod spec.
    monkeypatch.setenv("HASTE_DATABASE_URL", f"postgresql://haste:{DB_PASSWORD}@db:5432/haste")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    rendered = render_k8s_step_job(
        _step_tags("evaluate_candidate_1"), SETTINGS, step_key="evaluate_candidate_1[i2]"
    )
    text = json.dumps(rendered)
    assert DB_PASSWORD not in text and API_KEY not in text
    container = _container(rendered)
    assert container["envFrom"] == [
        {"configMapRef": {"name": "haste-settings"}},
        {"secretRef": {"name": "haste-database"}},
        {"secretRef": {"name": "haste-llm"}},
    ]
    literal = {e["name"] for e in container["env"] if "value" in e}
    assert literal <= {"DAGSTER_HOME", "DAGSTER_RUN_JOB_NAME", "DAGSTER_RUN_STEP_KEY"}
    # Dagster's own Postgres password comes from its Secret, by key.
    from_secret = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    assert from_secret["DAGSTER_PG_PASSWORD"]["secretKeyRef"]["name"] == (
        "dagster-postgresql-secret"
    )


def test_kubernetes_executor_settings_come_from_the_environment() -> None:
    env = {
        "HASTE_DAGSTER_EXECUTOR": "k8s",
        "HASTE_K8S_NAMESPACE": "ml",
        "HASTE_K8S_IMAGE": "registry.example/haste-dagster:9",
        "HASTE_K8S_ENV_SECRETS": "haste-database, haste-llm",
        "HASTE_K8S_ENV_CONFIG_MAPS": "haste-settings",
        "HASTE_K8S_MAX_CONCURRENT": "8",
    }
    settings = K8sSettings.from_env(env)
    assert settings.executor_config() == {
        "job_namespace": "ml",
        "job_image": "registry.example/haste-dagster:9",
        "env_secrets": ["haste-database", "haste-llm"],
        "env_config_maps": ["haste-settings"],
        "max_concurrent": 8,
    }
    executor = executor_from_env(env)
    assert executor.name == "k8s"

    @job(executor_def=executor)
    def k8s_job() -> None:
        noop()

    # The configured values pass dagster-k8s's own executor schema.
    resolved = validate_run_config(k8s_job, {})
    assert "haste-database" in json.dumps(resolved["execution"])


def test_a_kubeconfig_switches_off_in_cluster_config() -> None:
    settings = K8sSettings.from_env({"HASTE_K8S_KUBECONFIG": "/etc/haste/kubeconfig"})
    config = settings.executor_config()
    assert config["load_incluster_config"] is False
    assert config["kubeconfig_file"] == "/etc/haste/kubeconfig"

    @job(executor_def=k8s_executor_def(settings))
    def k8s_job() -> None:
        noop()

    validate_run_config(k8s_job, {})
