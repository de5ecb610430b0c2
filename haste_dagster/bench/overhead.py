"""``haste bench overhead``: what Dagster adds to one attempt, measured against ``haste solve``.

The same attempt (competition, seed, iterations, loading ``none`` so every run does the
same work whatever the store holds) runs in three forms, each in a fresh child process:

* ``solve``: ``haste solve SLUG`` (attempt, skill extraction, final fit and grading);
* ``in_process``: the competition's assets (competition_data → attempt → submission →
  competition_skills) materialized by `defs.overhead` with Dagster's in-process executor;
* ``multiprocess``: the same with the multiprocess executor (one process per step, forked
  from a preloaded forkserver, HASTE's default);
* ``multiprocess_spawn`` (on request): the multiprocess executor with Dagster's default
  start method, spawn, where every step worker imports everything again.

Runs are interleaved (round r runs every form, the order rotated each round) so a change
in the machine's load hits all forms alike. Per run: wall seconds and CPU seconds of the
child and every process it waited for (``RUSAGE_CHILDREN``), plus the multiprocess
executor's forkserver and its step workers (read by the child from /proc, since nobody
waits for the forkserver); the PostgreSQL server's CPU is not counted for any form. The
Dagster forms also report spans from Dagster's event log (launch, each step, events
written), which say where the overhead is.

Everything runs in a throwaway database on the configured server (dropped afterwards),
which Dagster's storage shares (schema ``dagster``), as in a deployment.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haste_dagster import db
from haste_dagster.errors import HasteError

FORMS = ("solve", "in_process", "multiprocess", "multiprocess_spawn")
DEFAULT_FORMS = FORMS[:3]
_DAGSTER_MAIN = "from haste_dagster.defs.overhead import main; main()"


class OverheadBenchError(HasteError):
    """A run of the overhead bench failed (its output says why)."""


@dataclass(frozen=True)
class OverheadOptions:
    slug: str = "concrete_strength"
    iterations: int = 20
    seed: int = 0
    runs: int = 3
    forms: tuple[str, ...] = DEFAULT_FORMS
    timeout: float = 1800.0


def _command(form: str, options: OverheadOptions, json_path: Path) -> list[str]:
    common = ["--seed", str(options.seed), "--iterations", str(options.iterations)]
    if form == "solve":
        haste = [sys.executable, "-m", "haste_dagster"]
        return [
            *haste,
            "solve",
            options.slug,
            *common,
            "--loading",
            "none",
            "--json",
            str(json_path),
        ]
    executor = "multiprocess" if form.startswith("multiprocess") else form
    spawn = ["--spawn"] if form == "multiprocess_spawn" else []
    return [
        sys.executable,
        "-c",
        _DAGSTER_MAIN,
        options.slug,
        *common,
        "--loading",
        "none",
        "--executor",
        executor,
        *spawn,
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(form: str, options: OverheadOptions, env: dict[str, str], work: Path) -> dict:
    """One run of ``form`` in a child process: wall and CPU seconds, plus its own report."""
    json_path = work / f"{form}_{uuid.uuid4().hex[:8]}.json"
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        _command(form, options, json_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=options.timeout,
        check=False,
    )
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise OverheadBenchError(f"{form} run failed (exit {proc.returncode}):\n" + "\n".join(tail))
    run: dict[str, Any] = {
        "form": form,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
    }
    if form == "solve":
        result = json.loads(json_path.read_text())
        run["best_cv"] = result.get("best_cv")
        run["iterations"] = len(result.get("iterations", []))
    else:
        run["dagster"] = json.loads(proc.stdout.strip().splitlines()[-1])
        # the forkserver (and the step workers it forked) is nobody's waited-for child
        run["cpu_seconds"] = round(cpu + run["dagster"]["forkserver_cpu_seconds"], 3)
    return run


def _summary(runs: list[dict], form: str) -> dict[str, Any]:
    mine = [r for r in runs if r["form"] == form]
    wall = [r["wall_seconds"] for r in mine]
    cpu = [r["cpu_seconds"] for r in mine]
    out: dict[str, Any] = {
        "runs": len(mine),
        "wall_median": round(statistics.median(wall), 3),
        "wall_min": round(min(wall), 3),
        "cpu_median": round(statistics.median(cpu), 3),
        "cpu_min": round(min(cpu), 3),
    }
    spans = [r["dagster"] for r in mine if "dagster" in r]
    if spans:
        for key in ("launch_seconds", "run_seconds", "outside_steps_seconds"):
            values = [sp[key] for sp in spans if key in sp]
            if values:
                out[key.replace("_seconds", "_median")] = round(statistics.median(values), 3)
        out["worker_start_median"] = round(
            statistics.median(
                sum(st.get("worker_start_seconds", 0.0) for st in sp["steps"].values())
                for sp in spans
            ),
            3,
        )
        out["events_median"] = statistics.median(s["events"] for s in spans)
        steps = sorted({step for s in spans for step in s["steps"]})
        out["step_seconds_median"] = {
            step: round(
                statistics.median(s["steps"][step]["seconds"] for s in spans if step in s["steps"]),
                3,
            )
            for step in steps
        }
    return out


def run_overhead_bench(
    options: OverheadOptions, *, url: str | None = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Interleaved runs of every form; medians and the Dagster/solve ratios."""
    unknown = [f for f in options.forms if f not in FORMS]
    if unknown or "solve" not in options.forms:
        raise OverheadBenchError(f"forms must include 'solve' and come from {FORMS}: {unknown}")
    if options.runs < 1:
        raise OverheadBenchError(f"runs must be >= 1, not {options.runs}")
    server = url or db.database_url()
    name = f"haste_overhead_{uuid.uuid4().hex[:10]}"
    bench_url = db.create_database(server, name)
    load_before = os.getloadavg()[0]
    runs: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="haste_overhead_") as tmp:
            work = Path(tmp)
            env = {
                **os.environ,
                "HASTE_DATABASE_URL": bench_url,
                "HASTE_ARTIFACTS": str(work / "artifacts"),
                "HASTE_SKILL_ASSETS": str(work / "skill_assets"),
                "HASTE_HOME": str(work / "home"),
            }
            db.connect(bench_url).close()  # migrate once, outside the timed runs
            for r in range(options.runs):
                k = r % len(options.forms)
                for form in options.forms[k:] + options.forms[:k]:
                    run = run_once(form, options, env, work)
                    run["round"] = r
                    runs.append(run)
                    if log is not None:
                        log(
                            f"round {r + 1}/{options.runs} {form}: wall {run['wall_seconds']} s, "
                            f"cpu {run['cpu_seconds']} s"
                        )
    finally:
        db.drop_database(server, name)
    summary = {form: _summary(runs, form) for form in options.forms}
    base = summary["solve"]
    ratios = {
        form: {
            "wall": round(summary[form]["wall_median"] / base["wall_median"], 3),
            "cpu": round(summary[form]["cpu_median"] / base["cpu_median"], 3),
        }
        for form in options.forms
        if form != "solve"
    }
    return {
        "competition": options.slug,
        "iterations": options.iterations,
        "seed": options.seed,
        "runs_per_form": options.runs,
        "summary": summary,
        "ratio_to_solve": ratios,
        "target": "Dagster adds at most 10% wall time (ratio <= 1.10)",
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        },
    }
