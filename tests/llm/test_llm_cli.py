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
    assert len(calls) == len(fake_openai.requests) == 4
    assert [c["ok"] for c in calls] == [True, False, True, True]
    assert sum(c["prompt_tokens"] for c in calls) == 50 + 3 * 11
