"""Op outputs in PostgreSQL: the IO manager the distributed job's ops pass JSON through,
and the resources the job runs with."""

import json
from typing import Any

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext

from haste_dagster import db
from haste_dagster.defs.resources import (
    DatabaseResource,
    EmbedderResource,
    LLMResource,
    SkillStoreResource,
)

OUTPUTS_IO = "op_outputs_io_manager"
OUTPUTS_SCHEMA = "dagster_io"


# --- op outputs in PostgreSQL ---------------------------------------------------------------

# Dagster plumbing, like Dagster's own storage in the `dagster` schema: created on first use
# in a schema of its own, outside HASTE's migrated tables. The advisory lock stops parallel
# steps from racing on CREATE TABLE IF NOT EXISTS.
_OUTPUTS_DDL = f"""
SELECT pg_advisory_xact_lock(hashtext('{OUTPUTS_SCHEMA}.op_outputs'));
CREATE SCHEMA IF NOT EXISTS {OUTPUTS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OUTPUTS_SCHEMA}.op_outputs (
    run_id      text NOT NULL,
    step_key    text NOT NULL,
    output_name text NOT NULL,
    mapping_key text NOT NULL DEFAULT '',
    value       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_key, output_name, mapping_key)
);
"""
_READY: set[str] = set()


def _key(identifier: list[str]) -> tuple[str, str, str, str]:
    run_id, step_key, name, *rest = identifier
    return run_id, step_key, name, rest[0] if rest else ""


class PostgresJsonIOManager(ConfigurableIOManager):
    """Op outputs as JSON rows in the HASTE PostgreSQL (table ``dagster_io.op_outputs``).

    The default IO manager pickles outputs under DAGSTER_HOME on the local disk, which a
    step on another machine cannot read. Values must be JSON-serialisable (and small).
    """

    database: DatabaseResource

    def _connect(self) -> Any:
        url = self.database.url()
        conn = db.connect(url, migrate_schema=False)
        if url not in _READY:
            with conn.transaction():
                conn.execute(_OUTPUTS_DDL)
            _READY.add(url)
        return conn

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        try:
            value = json.dumps(obj, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise Failure(
                f"output {context.name!r} of {context.step_key} is not plain JSON ({exc}); "
                "ops of distributed jobs pass ids, specs as dicts and scores"
            ) from exc
        with self._connect() as conn:
            conn.execute(
                f"""INSERT INTO {OUTPUTS_SCHEMA}.op_outputs
                        (run_id, step_key, output_name, mapping_key, value)
                    VALUES (%s, %s, %s, %s, %s::jsonb)
                    ON CONFLICT (run_id, step_key, output_name, mapping_key)
                    DO UPDATE SET value = EXCLUDED.value, created_at = now()""",
                (*_key(list(context.get_identifier())), value),
            )

    def load_input(self, context: InputContext) -> Any:
        assert context.upstream_output is not None
        key = _key(list(context.upstream_output.get_identifier()))
        with self._connect() as conn:
            row = conn.execute(
                f"""SELECT value FROM {OUTPUTS_SCHEMA}.op_outputs
                    WHERE run_id = %s AND step_key = %s AND output_name = %s
                      AND mapping_key = %s""",
                key,
            ).fetchone()
        if row is None:
            raise Failure(f"no stored output {key[2]!r} of step {key[1]} in run {key[0]}")
        return row["value"]


def distributed_resources() -> dict[str, Any]:
    """Every resource the job's ops use, so the job also runs outside `Definitions`."""
    database = DatabaseResource()
    return {
        "database": database,
        "skill_store": SkillStoreResource(database=database, embedder=EmbedderResource()),
        "llm": LLMResource(),
        OUTPUTS_IO: PostgresJsonIOManager(database=database),
    }
