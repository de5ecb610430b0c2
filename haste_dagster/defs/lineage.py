"""Read what an upstream asset recorded: its latest materialization's metadata.

Assets here return metadata, not values (the data lives in PostgreSQL), so a downstream
asset finds *which* attempt it builds on from the attempt asset's latest materialization of
the same partition. That keeps the Dagster asset and the database row in step.
"""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance


def latest_metadata(
    instance: DagsterInstance, asset: str, partition: str | None = None
) -> dict[str, Any] | None:
    """Metadata values of the newest materialization of ``asset`` (``partition``), or None."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey(asset),
            asset_partitions=[partition] if partition is not None else None,
        ),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def latest_attempt_id(instance: DagsterInstance, slug: str) -> int:
    """The attempt the `attempt` asset of partition ``slug`` last produced."""
    metadata = latest_metadata(instance, "attempt", slug)
    if not metadata or "attempt_id" not in metadata:
        raise LookupError(f"asset attempt[{slug}] has not been materialized yet")
    return int(metadata["attempt_id"])
