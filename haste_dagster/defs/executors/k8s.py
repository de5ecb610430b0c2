"""The Kubernetes executor (dagster-k8s): its settings from the environment, and the Job a
step would run as (rendered offline, for tests and review)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import ExecutorDefinition

from haste_dagster.defs.executors.settings import (
    K8S_ENV_CONFIG_MAPS_ENV,
    K8S_ENV_SECRETS_ENV,
    K8S_IMAGE_ENV,
    K8S_IMAGE_PULL_POLICY_ENV,
    K8S_KUBECONFIG_ENV,
    K8S_MAX_CONCURRENT_ENV,
    K8S_NAMESPACE_ENV,
    K8S_SERVICE_ACCOUNT_ENV,
    env_names,
    env_value,
    parse_positive_int,
)


@dataclass(frozen=True)
class K8sSettings:
    """The k8s_job_executor's settings. Secrets are referenced by Secret *name* only."""

    namespace: str | None = None  # None: the run launcher's namespace
    image: str | None = None  # None: the image of the code location that launched the run
    env_secrets: tuple[str, ...] = ()
    env_config_maps: tuple[str, ...] = ()
    service_account: str | None = None
    image_pull_policy: str | None = None
    max_concurrent: int | None = None
    kubeconfig: str | None = None  # None: in-cluster config (the run worker is a pod)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> K8sSettings:
        max_concurrent = env_value(K8S_MAX_CONCURRENT_ENV, env)
        return cls(
            namespace=env_value(K8S_NAMESPACE_ENV, env) or None,
            image=env_value(K8S_IMAGE_ENV, env) or None,
            env_secrets=tuple(env_names(K8S_ENV_SECRETS_ENV, env)),
            env_config_maps=tuple(env_names(K8S_ENV_CONFIG_MAPS_ENV, env)),
            service_account=env_value(K8S_SERVICE_ACCOUNT_ENV, env) or None,
            image_pull_policy=env_value(K8S_IMAGE_PULL_POLICY_ENV, env) or None,
            max_concurrent=parse_positive_int(K8S_MAX_CONCURRENT_ENV, max_concurrent)
            if max_concurrent
            else None,
            kubeconfig=env_value(K8S_KUBECONFIG_ENV, env) or None,
        )

    def executor_config(self) -> dict[str, Any]:
        """Config for dagster-k8s's ``k8s_job_executor`` (only the fields that are set)."""
        config: dict[str, Any] = {
            "env_secrets": list(self.env_secrets),
            "env_config_maps": list(self.env_config_maps),
        }
        if self.namespace:
            config["job_namespace"] = self.namespace
        if self.image:
            config["job_image"] = self.image
        if self.service_account:
            config["service_account_name"] = self.service_account
        if self.image_pull_policy:
            config["image_pull_policy"] = self.image_pull_policy
        if self.max_concurrent:
            config["max_concurrent"] = self.max_concurrent
        if self.kubeconfig:
            config["load_incluster_config"] = False
            config["kubeconfig_file"] = self.kubeconfig
        return config


def k8s_executor_def(settings: K8sSettings) -> ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(settings.executor_config(), name="k8s")


def render_k8s_step_job(
    step_tags: Mapping[str, str],
    settings: K8sSettings,
    *,
    step_key: str,
    job_name: str = "haste",
    run_id: str = "00000000-0000-0000-0000-000000000000",
    image: str = "haste-dagster:latest",
    dagster_home: str = "/opt/dagster/dagster_home",
    instance_config_map: str = "dagster-instance",
    postgres_password_secret: str = "dagster-postgresql-secret",
) -> dict[str, Any]:
    """The Kubernetes Job the k8s executor would create for one step, as the API's JSON.

    Follows dagster-k8s's ``K8sStepHandler.launch_step``: the executor's container context,
    merged with the step's ``dagster-k8s/config`` tag, through ``construct_dagster_k8s_job``.
    The run-launcher parts (image, DAGSTER_HOME, instance ConfigMap, Postgres password
    Secret) are the arguments, so no cluster is needed: for reviews, dry runs and tests.
    """
    import kubernetes.client
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )

    config = settings.executor_config()
    executor_context = K8sContainerContext(
        image_pull_policy=config.get("image_pull_policy"),
        service_account_name=config.get("service_account_name"),
        env_config_maps=config.get("env_config_maps"),
        env_secrets=config.get("env_secrets"),
        namespace=config.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})),
    )
    context = executor_context.merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(dict(step_tags)))
    )
    job_config = DagsterK8sJobConfig(
        job_image=config.get("job_image") or image,
        dagster_home=dagster_home,
        instance_config_map=instance_config_map,
        postgres_password_secret=postgres_password_secret,
    )
    name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": job_name, "dagster/op": step_key, "dagster/run-id": run_id},
        env_vars=[
            {"name": "DAGSTER_RUN_JOB_NAME", "value": job_name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )
    rendered = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    rendered["metadata"]["namespace"] = context.namespace
    return rendered
