"""The asset checks catch what they are for: leaked test rows, dangling skill lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from haste_dagster.defs import steps
from haste_dagster.defs.resources import DatabaseResource, EmbedderResource, SkillStoreResource
from haste_dagster.defs.steps import competition as competition_steps
from haste_dagster.skills.model import Skill


def _skill_store() -> SkillStoreResource:
    return SkillStoreResource(database=DatabaseResource(), embedder=EmbedderResource())


def test_leak_check_fails_when_a_test_row_id_is_in_the_training_data(
    tiny_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = steps.load_competition("tiny_alpha")

    class Leaky:
        """The real competition, but one hidden-test row also sits in the training split."""

        definition, problem, answers_sha256 = real.definition, real.problem, real.answers_sha256
        test_features = real.test_features
        train = real.train.assign(
            row_id=[int(real.test_features["row_id"].iloc[0]), *real.train["row_id"].iloc[1:]]
        )

    # A stand-in by necessity: the real split never puts a test row in train, so the leak
    # the check must catch has to be injected into an otherwise real competition.
    # patched where competition_data_step looks it up (defs/steps/competition.py)
    monkeypatch.setattr(competition_steps, "load_competition", lambda slug: Leaky())
    result = steps.competition_data_step("tiny_alpha", DatabaseResource())
    (check,) = result.checks
    assert check.name == "no_test_rows_in_train"
    assert not check.passed and check.metadata["leaked_rows"] == 1


def test_lineage_check_fails_on_a_parent_that_is_not_in_the_store(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    store_resource = _skill_store()
    assert steps.skills_validity_step(store_resource).passed  # empty store: nothing wrong
    with store_resource.open() as (_conn, store):
        store.add(
            Skill(
                tier="domain",
                scope_key="tabular_regression",
                title="Shallower trees on small data",
                guidance="Limit tree depth when rows are few.",
                created_by="promotion",
                parent_ids=["sk_00000000deadbeef"],
            )
        )
    outcome = steps.skills_validity_step(store_resource)
    assert not outcome.passed
    assert list(outcome.metadata["unresolved_lineage"].data.values()) == [["sk_00000000deadbeef"]]
