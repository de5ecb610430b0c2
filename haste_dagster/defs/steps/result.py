"""What every step returns: Dagster metadata plus check outcomes (``StepResult``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    MaterializeResult,
    OpExecutionContext,
)

Log = Callable[[str], None]


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR


@dataclass
class StepResult:
    metadata: dict[str, Any]
    checks: list[CheckOutcome] = field(default_factory=list)
    value: Any = None  # what a job's next op needs (e.g. the attempt id); not stored

    def materialize_result(self) -> MaterializeResult:
        return MaterializeResult(
            metadata=self.metadata,
            check_results=[
                AssetCheckResult(
                    check_name=c.name, passed=c.passed, metadata=c.metadata, severity=c.severity
                )
                for c in self.checks
            ],
        )

    def log_events(
        self, context: OpExecutionContext, asset: str, partition: str | None
    ) -> None:
        """What :meth:`materialize_result` says, logged from an op (the op jobs and the
        distributed job run the steps outside an asset)."""
        key = AssetKey(asset)
        context.log_event(
            AssetMaterialization(asset_key=key, partition=partition, metadata=self.metadata)
        )
        for check in self.checks:
            context.log_event(
                AssetCheckEvaluation(
                    asset_key=key,
                    check_name=check.name,
                    passed=check.passed,
                    metadata=check.metadata,
                    severity=check.severity,
                    partition=partition,
                )
            )
