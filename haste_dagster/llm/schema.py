"""Reply schemas as a model sees them: bounded free text, and the prompt's trimmed copy.

A bound on free text lives in the schema (``maxLength``), so an endpoint that compiles the
schema into a decoding grammar (llama.cpp) closes a string at the bound instead of letting
a small model ramble until ``max_tokens`` cuts the whole reply off mid-JSON. Endpoints that
do not enforce it (OpenAI without strict mode) may send more: that text is clipped, not
refused, because a good patch must not cost a repair round for a long rationale.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints


def _clipper(max_chars: int) -> BeforeValidator:
    return BeforeValidator(lambda v: v[:max_chars] if isinstance(v, str) else v)


# A name or a title: a few words.
ShortText = Annotated[str, _clipper(80), StringConstraints(max_length=80)]
# A rationale, a reason, a learning: a sentence or two (about 60 tokens).
Text = Annotated[str, _clipper(240), StringConstraints(max_length=240)]


def _redundant(key: str, value: Any) -> bool:
    # A title restates its property's name and a discriminator each operation's ``const``.
    # A property *named* "title" or "discriminator" holds a schema object, and stays.
    if key == "title":
        return isinstance(value, str)
    return key == "discriminator" and isinstance(value, dict) and "propertyName" in value


def prompt_schema(node: Any) -> Any:
    """``node`` (a JSON schema) without what a model reading it in a prompt can do without.

    Only the prompt's copy is trimmed (a quarter of its tokens); ``response_format`` gets
    the whole schema.
    """
    if isinstance(node, list):
        return [prompt_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: prompt_schema(v) for k, v in node.items() if not _redundant(k, v)}
    if "const" in out:
        out.pop("default", None)  # a constant's default is the constant
    return out
