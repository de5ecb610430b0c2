"""Run configuration shared by the assets and jobs that run attempts."""

from typing import Literal

from dagster import Config
from pydantic import Field


class AttemptRunConfig(Config):
    """How an attempt runs; the defaults are the offline heuristic with tiered skill loading."""

    policy: Literal["heuristic", "llm"] = "heuristic"
    loading: Literal["tiered", "flat", "none"] = Field(
        default="tiered",
        description="Which skills the attempt loads: tiered (global top-k, its domain, "
        "itself), flat (every skill) or none.",
    )
    # Plain defaults (not None) so the launchpad's scaffolded config shows every option a
    # user wants first: Dagster leaves fields whose default is None out of it.
    iterations: int = Field(
        default=0, ge=0, description="Refinement iterations; 0: the competition's budget."
    )
    seed: int = Field(default=0, description="Random seed of the attempt.")
    label: str | None = None
    pipeline: Literal["straight", "staged"] = Field(
        default="straight",
        description="straight: the default spec refined in one line; staged: prototype "
        "screen, winner and runner-up branches, rank-average ensemble.",
    )
    resume: bool = Field(
        default=True,
        description="Continue the newest unfinished (or ungraded) attempt with the same policy, "
        "loading and seed (e.g. after a crashed run) instead of starting over.",
    )


class TransferBenchConfig(Config):
    """The `transfer_benchmark` job's run config: `haste bench transfer`'s options."""

    quick: bool = Field(default=True, description="The CI smoke preset (1 seed, 10 iterations).")
    competitions: list[str] = Field(default_factory=list, description="Campaign order.")
    evaluation: list[str] = Field(default_factory=list, description="Held-out competitions.")
    defs_dirs: list[str] = Field(
        default_factory=list, description="Folders of YAMLs searched before the bundled ones."
    )
    seeds: int | None = Field(default=None, ge=1, description="None: the preset's.")
    iterations: int | None = Field(default=None, ge=1, description="None: the preset's.")
    policy: Literal["heuristic", "llm"] = "heuristic"
    pipeline: Literal["straight", "staged"] = Field(
        default="straight", description="Every attempt's pipeline (see AttemptRunConfig)."
    )
    peers: list[str] = Field(default_factory=lambda: ["flaml"])
    campaign_seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the campaign's attempts; the evaluation seeds start here too "
        "(another value: an independent replicate).",
    )


class RerunConfig(AttemptRunConfig):
    """The campaign's re-run phase: its attempts' settings, and whether it runs at all."""

    rerun: bool = Field(
        default=True,
        description="Re-run every competition that did not medal, warm and without skills "
        "(`haste campaign --no-rerun` is False).",
    )
