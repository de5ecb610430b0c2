"""HASTE on Dagster: hierarchical skill accumulation for ML-engineering agents."""

__version__ = "0.1.0"
