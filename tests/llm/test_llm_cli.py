"""`haste solve --policy llm` end to end: a real subprocess against the loopback server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import SECRET_KEY, FakeOpenAI, ok, text
from tiny_competition import SLUG, patch_reply, set_op, tiny_competition

from haste_dagster import db
from haste_dagster.llm.ledger import TokenLedger


@pytest.mark.slow
def test_haste_solve_with_llm_policy_records_tokens_per_call(
    fake_openai: FakeOpenAI, db_url: str, tmp_path: Path
) -> None:
    tiny_competition(tmp_path)
    fake_openai.push(
        ok({"rationale": "small data", "patch": set_op("model.params.n_estimators", 40)},
           prompt_tokens=50, completion_tokens=9),
        text("Sure! Here is my idea: deeper trees."),
        patch_reply(set_op("model.params.max_depth", 3)),
        patch_reply(set_op("model.params.learning_rate", 0.2)),
        # after the attempt: reflection (2 learnings), then the orchestrator's labels
        ok({"learnings": [
            {"title": "Shallow trees on tiny data", "text": "max_depth 3 helped",
             "proposed_tier": "competition", "iterations": [1]},
            {"title": "Keep the learning rate", "text": "0.2 did not help",
             "proposed_tier": "competition", "iterations": [2]},
        ]}),
        ok({"decisions": [
            {"index": 0, "label": "competition", "reason": "seen once"},
            {"index": 1, "label": "skip", "reason": "no effect"},
        ]}),
    )
    out = tmp_path / "out.json"
    env = {
        **os.environ, "HASTE_DATABASE_URL": db_url, "OPENAI_BASE_URL": fake_openai.url,
        "OPENAI_API_KEY": SECRET_KEY, "HASTE_LLM_MODEL": "fake-model", "HASTE_LLM_TIMEOUT": "30",
    }
    done = subprocess.run(
        [sys.executable, "-m", "haste_dagster", "solve", SLUG, "--policy", "llm",
         "--iterations", "2", "--defs", str(tmp_path), "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET_KEY not in done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert [it["idx"] for it in result["iterations"]] == [0, 1, 2]
    assert result["iterations"][1]["patch"] == set_op("model.params.max_depth", 3)
    assert fake_openai.pending == 0
    with db.connection(db_url) as conn:
        calls = TokenLedger(conn).calls()
    assert len(calls) == len(fake_openai.requests) == 6
    assert [c["ok"] for c in calls] == [True, False, True, True, True, True]
    assert [c["purpose"] for c in calls][-2:] == ["reflect", "label_learnings"]
    assert sum(c["prompt_tokens"] for c in calls) == 50 + 5 * 11
    assert result["llm"]["calls"] == 6  # the ledger's totals reach the CLI JSON
    with db.connection(db_url) as conn:
        reflected = conn.execute(
            "SELECT tier, title FROM skills WHERE title = 'Shallow trees on tiny data'"
        ).fetchall()
        labels = conn.execute("SELECT label FROM promotion_decisions ORDER BY id").fetchall()
    assert [r["tier"] for r in reflected] == ["competition"]
    assert [r["label"] for r in labels] == ["competition", "skip"]
