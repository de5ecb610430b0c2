"""Executor selection from the environment, the Celery settings, and training-step tags."""

from __future__ import annotations

import importlib
import json

import pytest
from dagster import job, op, validate_run_config
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY

from haste_dagster.defs.executors import (
    CELERY_QUEUE_TAG,
    K8S_CONFIG_TAG,
    CelerySettings,
    ExecutorConfigError,
    TrainingRouting,
    celery_app,
    describe_executor,
    executor_from_env,
    executor_name,
    gpu_queue,
    parse_node_selector,
    parse_tolerations,
    training_tags,
)

BROKER = "redis://:s3cret-pw@broker.internal:6379/0"


@op
def noop() -> None:
    pass


def test_the_default_executor_is_multiprocess() -> None:
    assert executor_name({}) == "multiprocess"
    assert executor_from_env({}).name == "multiprocess"
    assert executor_from_env({"HASTE_DAGSTER_EXECUTOR": " In_Process "}).name == "in_process"


def test_an_unknown_executor_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ExecutorConfigError) as info:
        executor_from_env({"HASTE_DAGSTER_EXECUTOR": "dask"})
    message = str(info.value)
    assert "HASTE_DAGSTER_EXECUTOR='dask'" in message
    for choice in ("multiprocess", "in_process", "celery", "k8s"):
        assert choice in message
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still do


def test_the_celery_executor_needs_a_broker_url() -> None:
    with pytest.raises(ExecutorConfigError, match="HASTE_CELERY_BROKER_URL"):
        executor_from_env({"HASTE_DAGSTER_EXECUTOR": "celery"})


def test_the_celery_executor_config_names_variables_never_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"HASTE_DAGSTER_EXECUTOR": "celery", "HASTE_CELERY_BROKER_URL": BROKER}
    settings = CelerySettings.from_env(env)
    # Redis keeps the results too, read from the same variable.
    assert settings.executor_config() == {
        "broker": {"env": "HASTE_CELERY_BROKER_URL"},
        "backend": {"env": "HASTE_CELERY_BROKER_URL"},
    }
    assert "s3cret-pw" not in json.dumps(settings.executor_config())
    assert "s3cret-pw" not in json.dumps(describe_executor(env))
    assert describe_executor(env)["broker"] == "redis://:***@broker.internal:6379/0"

    executor = executor_from_env(env)
    assert executor.name == "celery"

    @job(executor_def=executor)
    def celery_job() -> None:
        noop()

    # A run's config (stored, shown in the UI) needs no URL: the variable is resolved when
    # the executor starts, in the process that runs it.
    monkeypatch.setenv("HASTE_CELERY_BROKER_URL", BROKER)
    resolved = validate_run_config(celery_job, {})
    assert BROKER in json.dumps(resolved["execution"])


def test_the_celery_result_backend_follows_the_broker_unless_set() -> None:
    amqp = CelerySettings.from_env({"HASTE_CELERY_BROKER_URL": "amqp://guest@rabbit//"})
    assert amqp.backend_url == "rpc://" and amqp.executor_config()["backend"] == "rpc://"
    own = CelerySettings.from_env(
        {"HASTE_CELERY_BROKER_URL": BROKER, "HASTE_CELERY_BACKEND_URL": "redis://cache:6379/1"}
    )
    assert own.executor_config()["backend"] == {"env": "HASTE_CELERY_BACKEND_URL"}
    assert own.backend_url == "redis://cache:6379/1"


def test_the_worker_app_uses_the_executors_broker_and_registers_the_step_task() -> None:
    app = celery_app({"HASTE_CELERY_BROKER_URL": "redis://127.0.0.1:6399/3"})
    assert app.conf.broker_url == "redis://127.0.0.1:6399/3"
    assert app.conf.result_backend == "redis://127.0.0.1:6399/3"
    assert "execute_plan" in app.tasks
    assert app.conf.task_default_queue == "dagster"


def test_the_tag_keys_are_the_ones_the_executors_read() -> None:
    assert CELERY_QUEUE_TAG == DAGSTER_CELERY_QUEUE_TAG
    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY


def test_training_steps_stay_on_the_default_queue_without_gpu_routing() -> None:
    assert training_tags(TrainingRouting.from_env({})) == {"haste/workload": "train"}
    for off in ("", "0", "false", "off"):
        assert gpu_queue({"HASTE_GPU_QUEUE": off}) is None


def test_gpu_routing_sends_training_steps_to_the_gpu_queue() -> None:
    assert gpu_queue({"HASTE_GPU_QUEUE": "gpu"}) == "gpu"
    assert gpu_queue({"HASTE_GPU_QUEUE": "true"}) == "gpu"
    assert gpu_queue({"HASTE_GPU_QUEUE": "gpu-a100"}) == "gpu-a100"
    tags = training_tags(TrainingRouting.from_env({"HASTE_GPU_QUEUE": "1"}))
    assert tags == {"haste/workload": "train", "dagster-celery/queue": "gpu"}
    with pytest.raises(ExecutorConfigError, match="HASTE_GPU_QUEUE"):
        gpu_queue({"HASTE_GPU_QUEUE": "gpu queue!"})


def test_kubernetes_gpu_settings_become_the_dagster_k8s_config_tag() -> None:
    routing = TrainingRouting.from_env(
        {
            "HASTE_K8S_GPUS": "2",
            "HASTE_K8S_GPU_NODE_SELECTOR": "nvidia.com/gpu.present=true, pool=gpu",
            "HASTE_K8S_GPU_TOLERATIONS": "nvidia.com/gpu=present:NoSchedule,spot",
            "HASTE_K8S_TRAIN_MEMORY": "8Gi",
        }
    )
    config = json.loads(training_tags(routing)["dagster-k8s/config"])
    assert config == {
        "container_config": {
            "resources": {"limits": {"nvidia.com/gpu": "2"}, "requests": {"memory": "8Gi"}}
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true", "pool": "gpu"},
            "tolerations": [
                {
                    "key": "nvidia.com/gpu",
                    "operator": "Equal",
                    "value": "present",
                    "effect": "NoSchedule",
                },
                {"key": "spot", "operator": "Exists"},
            ],
        },
    }


def test_node_selectors_and_tolerations_also_accept_json() -> None:
    assert parse_node_selector('{"pool": "gpu"}') == {"pool": "gpu"}
    tolerations = '[{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}]'
    assert parse_tolerations(tolerations) == [
        {"key": "gpu", "operator": "Exists", "effect": "NoExecute"}
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HASTE_K8S_GPUS", "one"),
        ("HASTE_K8S_GPUS", "-1"),
        ("HASTE_K8S_GPU_NODE_SELECTOR", "pool"),
        ("HASTE_K8S_GPU_NODE_SELECTOR", "{not json"),
        ("HASTE_K8S_GPU_TOLERATIONS", "gpu=present:Sometimes"),
        ("HASTE_K8S_GPU_TOLERATIONS", '[{"key": "gpu"}, "x"]'),
    ],
)
def test_bad_routing_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ExecutorConfigError, match=variable):
        TrainingRouting.from_env({variable: value})


def test_definitions_take_the_executor_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from haste_dagster.defs.definitions import build_definitions

    monkeypatch.setenv("HASTE_DAGSTER_EXECUTOR", "in_process")
    defs = build_definitions(["tabular_regression"])
    assert defs.resolve_job_def("solve_competition").executor_def.name == "in_process"
    assert defs.resolve_job_def("distributed_attempt").executor_def.name == "in_process"


def test_every_forkserver_preload_module_imports() -> None:
    # The forkserver swallows ImportError on preload, so a misspelt module would silently
    # bring back the per-step imports; import each one here instead.
    from haste_dagster.defs.executors import FORKSERVER_PRELOAD

    assert "haste_dagster.defs.definitions" in FORKSERVER_PRELOAD
    for name in FORKSERVER_PRELOAD:
        importlib.import_module(name)
