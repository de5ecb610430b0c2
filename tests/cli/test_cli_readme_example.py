"""The README's worked example of an own competition, run as written: its data script, its
YAML, then every command of its shell block (freeze, show, solve, grade)."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from haste_dagster.cli import app
from haste_dagster.competitions.registry import load_competition
from haste_dagster.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
import freeze_splits  # noqa: E402

runner = CliRunner()
EXAMPLE = re.compile(r"<!-- example: own-competition -->(.*?)<!-- /example -->", re.S)
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _blocks() -> dict[str, str]:
    match = EXAMPLE.search((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README lost its worked example markers"
    return {lang: body for lang, body in BLOCK.findall(match.group(1))}


def _file_of(block: str) -> str:
    first = block.splitlines()[0]
    assert first.startswith("# "), "each file block starts with `# <path>`"
    return first[2:].split(":")[0].strip()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_worked_example_freezes_solves_and_grades(cli_env: Path) -> None:
    blocks = _blocks()
    assert set(blocks) == {"python", "yaml", "bash"}
    outputs: list[str] = []
    for line in blocks["bash"].splitlines():
        args = shlex.split(line)
        if args[:2] == ["mkdir", "-p"]:
            Path(args[2]).mkdir(parents=True, exist_ok=True)
            # The file blocks are written where their first line says.
            for lang in ("python", "yaml"):
                Path(_file_of(blocks[lang])).write_text(blocks[lang])
        elif args[0] == ".venv/bin/python" and args[1] == "scripts/freeze_splits.py":
            assert freeze_splits.main(args[2:]) == 0
        elif args[0] == ".venv/bin/python":
            runpy.run_path(args[1], run_name="__main__")
        elif args[0] == ".venv/bin/haste":
            result = runner.invoke(app, args[1:])
            assert result.exit_code == 0, f"{line}\n{result.output}"
            outputs.append(result.output)
        else:
            pytest.fail(f"the test does not know how to run this README line: {line}")

    definition = yaml.safe_load(Path("my_defs/my_churn.yaml").read_text())
    assert len(definition["split"]["answers_sha256"]) == 64  # frozen
    problem = load_competition("my_churn", Path("my_defs")).problem
    assert {"zip", "plan"} <= set(problem.categorical) and "customer_id" not in problem.numeric
    assert (problem.date, problem.text) == (["signup_date"], ["last_ticket"])
    assert "my_churn" in outputs[0] and "ungraded" in outputs[0]  # `competitions show`
    result = json.loads(Path("my_churn.json").read_text())
    assert result["medal"] is None and result["thresholds"] is None
    assert 0.5 < result["score"] <= 1.0  # the churn signal is learnable
    submission = pd.read_csv("my_churn_submission.csv")
    assert list(submission.columns) == ["row_id", "churned"]
    assert submission["churned"].between(0, 1).all()
    report = json.loads(outputs[-1])
    assert report["score"] == round(result["score"], 5)
    assert report["medal"] is None and report["gold_medal"] is None
