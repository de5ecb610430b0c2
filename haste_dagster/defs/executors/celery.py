"""The Celery executor (dagster-celery): its settings from the environment, and the app
HASTE's workers run (``celery -A haste_dagster.defs.executors worker``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import ExecutorDefinition

from haste_dagster.config import redact
from haste_dagster.defs.executors.settings import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    EXECUTOR_ENV,
    ExecutorConfigError,
    env_value,
)


@dataclass(frozen=True)
class CelerySettings:
    """Where Celery's broker and result backend are, as variable names and their values."""

    broker_url: str
    backend_url: str
    backend_env: str | None  # the variable holding the backend URL; None for rpc://

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CelerySettings:
        broker = env_value(CELERY_BROKER_ENV, env)
        if not broker:
            raise ExecutorConfigError(
                f"the Celery executor ({EXECUTOR_ENV}=celery) and its workers need "
                f"{CELERY_BROKER_ENV}, the Celery broker URL (e.g. redis://127.0.0.1:6379/0)"
            )
        backend = env_value(CELERY_BACKEND_ENV, env)
        if backend:
            return cls(broker, backend, CELERY_BACKEND_ENV)
        if broker.split("://", 1)[0] in ("redis", "rediss"):
            # Redis keeps the results too: one service, one variable.
            return cls(broker, broker, CELERY_BROKER_ENV)
        return cls(broker, "rpc://", None)  # e.g. RabbitMQ: results as replies on the broker

    def executor_config(self) -> dict[str, Any]:
        """The celery_executor config: variable *names* only, resolved where the run executes."""
        return {
            "broker": {"env": CELERY_BROKER_ENV},
            "backend": {"env": self.backend_env} if self.backend_env else self.backend_url,
        }

    def describe(self) -> dict[str, str]:
        return {"broker": redact(self.broker_url), "backend": redact(self.backend_url)}


def celery_executor_def(settings: CelerySettings) -> ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured(settings.executor_config(), name="celery")


def celery_app(env: Mapping[str, str] | None = None) -> Any:
    """The Celery app HASTE's workers run: dagster-celery's step task on the same broker,
    backend and settings the executor uses (`celery -A haste_dagster.defs.executors worker`)."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    settings = CelerySettings.from_env(env)
    executor = CeleryExecutor.for_cli(broker=settings.broker_url, backend=settings.backend_url)
    app = make_app(executor.app_args())
    create_task(app)
    return app
