"""Partitions: one per competition (dynamic, added by a sensor) and one per domain."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

COMPETITION_PARTITIONS_NAME = "competition"

# Dynamic: dropping a YAML into competition_defs/ must not need a code reload.
competition_partitions = DynamicPartitionsDefinition(name=COMPETITION_PARTITIONS_NAME)


def known_domains() -> list[str]:
    """Domains of the valid definitions in competition_defs/, read when the code loads.

    Domains change rarely and each owns a specialist, so a static set is enough; a new
    domain appears after the code location is reloaded. Broken files are skipped here
    (the sensor reports them).
    """
    from haste_dagster.competitions import load_definitions

    definitions, _errors = load_definitions(check_data=False)
    return sorted({d.domain for d in definitions})


def domain_partitions(domains: list[str] | None = None) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(
        sorted(set(domains)) if domains is not None else known_domains()
    )
