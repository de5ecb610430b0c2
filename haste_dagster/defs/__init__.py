"""Dagster wiring of HASTE: assets, checks, jobs, schedules, sensors, resources, instance.

`haste_dagster.defs.definitions.defs` is the `Definitions` object (workspace.yaml loads it).
This package is the only place that imports Dagster; importing it builds nothing.
"""
