"""The transfer benchmark: does what was learnt on some competitions help on unseen ones?

Phases (all in throwaway databases created on the same PostgreSQL server as the store the
caller named, and dropped afterwards; the caller's own database is never written):

1. **Campaign** (database ``<tag>_inv``): an empty skill store; the development
   competitions are solved by the campaign protocol (``campaign.campaign_protocol``):
   round 1 = the first competition of each domain, cold (no skills loaded); round 2 = the
   rest, tiered; promotion after each competition and consolidation between rounds; then the
   re-run phase: every development competition that did not medal again warm (``rerun_warm``)
   and again without skills (``rerun_control``), both with seed ``campaign_seed + 1000``.
   For every attempt the number of active skills when it started is recorded; the inventory
   by tier and per domain and kind is reported after the campaign.
2. **Warm vs cold** on each evaluation competition (never solved in the campaign), for every
   seed: *warm* = an attempt with ``tiered`` loading against the frozen inventory of (1).
   An evaluation competition has no competition skills of its own, so tiered loading gives
   exactly its domain skills and the global ones. *cold* = the same attempt against an empty
   store (database ``<tag>_cold``). Same seed, same iteration budget, same folds.
3. **Loading ablation** on the same frozen inventory, same seeds and budget: ``tiered`` (the
   warm attempts themselves), ``flat`` (every active skill in scope) and ``none``.
   Evaluation attempts read the store through :class:`FrozenStore`, which writes no usage
   statistics, so every attempt sees the same skills with the same utilities; a fingerprint
   of the inventory taken before and after the evaluation phase proves it did not change.
4. **Kept rate vs inventory size**: one point per attempt (campaign and evaluation): its
   kept rate (kept patches / scored refinement iterations) against the active skills in the
   store when it started.
5. **Peers**: FLAML AutoML on each evaluation competition and seed, given the CPU seconds the
   warm attempt measurably used (search + final fit), graded on the same hidden split and
   leaderboard; its own measured CPU seconds are reported beside the budget.

**Iterations to reach a score.** An attempt's iteration ``i`` is its ``i``-th scored spec
(``0`` = the initial spec). The *evaluations to reach* a score ``t`` is ``i + 1`` for the
first iteration ``i`` whose *kept* score is at least as good as ``t`` (the baseline
evaluation counts, so the number is defined when the baseline already reaches ``t``). For a
(competition, seed) pair, cold's count is the evaluations to reach its own final CV score,
warm's is the evaluations to reach that same score. A warm attempt that never reaches it
within its budget ``B`` is *censored* and counted as ``B + 1`` evaluations (all it was
allowed: a lower bound on its true cost), and flagged. The headline
``warm_cold_iteration_ratio`` is Σ warm / Σ cold over all pairs; the mean and spread of the
per-pair ratios are reported beside it.

Wall-clock and CPU seconds (this process and its children) are measured around every
attempt, submission and peer run (:mod:`haste_dagster.bench.measure`).

Modules: :mod:`.plan` (options, presets, plan), :mod:`.measures` (pure functions of the
records), :mod:`.report` (records, summaries, verdicts, JSON), :mod:`.uncertainty`
(intervals over pairs, replicates pooled), :mod:`.run` (the phases).
"""

from haste_dagster.bench.transfer.measures import (
    PairRatio,
    ablation_summary,
    evaluations_to_reach,
    incumbent_curve,
    kept_rate_bins,
    pair_ratio,
    pooled_proposals,
    proposal_counts,
    spread,
)
from haste_dagster.bench.transfer.plan import (
    MODES,
    BenchmarkError,
    Plan,
    TransferOptions,
    plan_benchmark,
)
from haste_dagster.bench.transfer.report import (
    SCHEMA,
    TARGETS,
    AttemptRecord,
    Graded,
    PeerRecord,
    TransferReport,
    write_json,
)
from haste_dagster.bench.transfer.run import (
    FrozenStore,
    inventory,
    inventory_listing,
    replay_evaluation,
    run_transfer_benchmark,
)
from haste_dagster.bench.transfer.uncertainty import (
    PairOutcome,
    check_replicates,
    figures,
    outcomes_from_json,
    pooled_figures,
    retry_outcomes,
)

__all__ = [
    "MODES",
    "SCHEMA",
    "TARGETS",
    "AttemptRecord",
    "BenchmarkError",
    "FrozenStore",
    "Graded",
    "PairOutcome",
    "PairRatio",
    "PeerRecord",
    "Plan",
    "TransferOptions",
    "TransferReport",
    "ablation_summary",
    "check_replicates",
    "evaluations_to_reach",
    "figures",
    "incumbent_curve",
    "inventory",
    "inventory_listing",
    "kept_rate_bins",
    "outcomes_from_json",
    "pair_ratio",
    "plan_benchmark",
    "pooled_figures",
    "pooled_proposals",
    "proposal_counts",
    "retry_outcomes",
    "replay_evaluation",
    "run_transfer_benchmark",
    "spread",
    "write_json",
]
