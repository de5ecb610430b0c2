"""One attempt materialized as the competition's Dagster assets, for `haste bench overhead`.

The bench (`haste_dagster.bench.overhead`, which imports no Dagster) runs this in a child
process, like it runs ``haste solve``, so both forms pay their own imports and process
start; it prints one JSON object: the run's outcome and where its wall time went, read
from Dagster's event log (run launch, each step's span, event count)::

    python -c "from haste_dagster.defs.overhead import main; main()" SLUG \\
        --seed 0 --iterations 20 --loading none --executor multiprocess

The executor is chosen the way a deployment chooses it, through ``HASTE_DAGSTER_EXECUTOR``
(set here before the definitions are built; multiprocess step workers inherit it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

STARTED = time.perf_counter()  # before Dagster is imported: imports are part of the cost


def solve_job() -> Any:
    """The `solve_competition` job (module level so `reconstructable` can rebuild it in
    the multiprocess executor's step workers)."""
    from haste_dagster.defs.definitions import build_definitions

    return build_definitions().resolve_job_def("solve_competition")


def _timings(records: list[Any], process_started: float) -> dict[str, Any]:
    """Spans from the event log: launch (process start to the run's start event), each
    step's STEP_START to STEP_SUCCESS/FAILURE, the multiprocess executor's worker start
    (STEP_WORKER_STARTING to STEP_START), and how many events were written."""
    from dagster import DagsterEventType as E

    stamps: dict[tuple[str, str], float] = {}
    run_start = run_end = None
    for record in records:
        entry = getattr(record, "event_log_entry", record)
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == E.RUN_START:
            run_start = entry.timestamp
        elif kind in (E.RUN_SUCCESS, E.RUN_FAILURE):
            run_end = entry.timestamp
        elif event.step_key and kind in (
            E.STEP_WORKER_STARTING,
            E.STEP_START,
            E.STEP_SUCCESS,
            E.STEP_FAILURE,
        ):
            stamps[(event.step_key, kind.name)] = entry.timestamp
    steps: dict[str, dict[str, float]] = {}
    for (step, name), ts in stamps.items():
        if name not in ("STEP_SUCCESS", "STEP_FAILURE") or (step, "STEP_START") not in stamps:
            continue
        began = stamps[(step, "STEP_START")]
        steps[step] = {"seconds": round(ts - began, 3)}
        if (step, "STEP_WORKER_STARTING") in stamps:
            steps[step]["worker_start_seconds"] = round(
                began - stamps[(step, "STEP_WORKER_STARTING")], 3
            )
    out: dict[str, Any] = {"events": len(records), "steps": steps}
    if run_start is not None and run_end is not None:
        out["run_seconds"] = round(run_end - run_start, 3)
        # imports, instance, definitions and run creation, before the run starts
        out["launch_seconds"] = round(run_start - process_started, 3)
        out["outside_steps_seconds"] = round(
            out["run_seconds"] - sum(s["seconds"] for s in steps.values()), 3
        )
    return out


def forkserver_cpu_seconds() -> float:
    """CPU seconds of this process's multiprocessing forkserver and the step workers it has
    reaped (0 without one). The forkserver is not this process's waited-for child, so
    ``RUSAGE_CHILDREN`` in the bench never sees it: read it from /proc while it lives."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return 0.0
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the command name
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slug")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--loading", default="none")
    parser.add_argument("--executor", choices=("in_process", "multiprocess"), required=True)
    parser.add_argument(
        "--spawn",
        action="store_true",
        help="multiprocess: Dagster's default start method (spawn), not HASTE's forkserver",
    )
    args = parser.parse_args(argv)
    os.environ["HASTE_DAGSTER_EXECUTOR"] = args.executor
    wall0 = time.time() - (time.perf_counter() - STARTED)

    from dagster import execute_job, reconstructable

    from haste_dagster.defs.instance import dagster_instance
    from haste_dagster.defs.partitions import COMPETITION_PARTITIONS_NAME

    instance = dagster_instance()
    instance.add_dynamic_partitions(COMPETITION_PARTITIONS_NAME, [args.slug])
    config = {
        "iterations": args.iterations,
        "seed": args.seed,
        "loading": args.loading,
        "resume": False,
    }
    with execute_job(
        reconstructable(solve_job),
        instance=instance,
        run_config={
            "ops": {"attempt": {"config": config}},
            **({"execution": {"config": {"start_method": {"spawn": {}}}}} if args.spawn else {}),
        },
        tags={"dagster/partition": args.slug},
    ) as result:
        run_id, success = result.run_id, result.success
    records = instance.all_logs(run_id)
    report = {
        "run_id": run_id,
        "success": success,
        "forkserver_cpu_seconds": round(forkserver_cpu_seconds(), 3),
        **_timings(records, wall0),
    }
    instance.dispose()
    sys.stdout.write(json.dumps(report) + "\n")
    if not success:
        raise SystemExit(1)
