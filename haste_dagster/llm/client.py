"""The LLM client: any OpenAI-compatible endpoint through the ``openai`` package.

Works against OpenAI, vLLM, Ollama and llama.cpp server: only ``/v1/chat/completions``
is used. ``complete_json`` asks for JSON, parses it into a pydantic model and, when the
reply is not valid JSON or does not validate, tells the model what was wrong and asks again
a bounded number of times. Structured output degrades per endpoint: ``json_schema``
response format first; an endpoint that rejects it (HTTP 400/422) is asked with
``json_object``, then with plain text. The schema is always also stated in the prompt (at
the end of the user turn, a trimmed copy), so endpoints that silently ignore
``response_format`` still know what to send.

Transport errors (429, 5xx, timeouts, refused connections) are retried here, not by the
``openai`` client (its ``max_retries`` is 0), so that every HTTP call, failed ones included,
lands in the token ledger and tests can shrink the backoff to milliseconds.

Secrets: the API key and any password in the base URL never appear in log lines, exception
messages or ledger rows (``config.redact`` plus a literal scrub of the key).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import openai
import psycopg
from pydantic import BaseModel, ValidationError

from haste_dagster.config import redact
from haste_dagster.errors import HasteError, LLMError
from haste_dagster.llm.ledger import AGENT_LEVELS, AgentLevel, CallRecord, TokenLedger
from haste_dagster.llm.schema import prompt_schema

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
Message = Mapping[str, str]
ResponseFormat = Literal["auto", "json_schema", "json_object", "text"]
_MODES: tuple[str, ...] = ("json_schema", "json_object", "text")
# A key shorter than this is a placeholder ("x", "no"); scrubbing it would mangle text.
_MIN_SCRUB_LEN = 4


class TokenBudgetExceeded(LLMError):
    """The campaign's token budget is spent; raised *before* a call is sent."""

    def __init__(self, spent: int, budget: int, campaign_id: str | None) -> None:
        self.spent = spent
        self.budget = budget
        self.campaign_id = campaign_id
        self.usage = Usage()  # what the interrupted request had already cost
        scope = f"campaign {campaign_id!r}" if campaign_id else "this client"
        super().__init__(f"token budget of {budget} spent for {scope} ({spent} tokens used)")


class LLMCallError(LLMError):
    """A call failed for good (after retries / repairs); ``usage`` is what it still cost."""

    def __init__(self, message: str, usage: Usage) -> None:
        self.usage = usage
        super().__init__(message)


class LLMRequestFailed(LLMCallError):
    """The endpoint could not be used: HTTP errors, timeouts or refused connections."""


class LLMReplyInvalid(LLMCallError):
    """The model kept replying with invalid JSON or values after every repair round."""

    def __init__(self, message: str, usage: Usage, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(message, usage)


class ReplyRejected(HasteError, ValueError):
    """Raised by a ``validate`` hook: the reply parsed but its values are unusable.

    The message is sent back to the model, so it must say what to change.
    """


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    latency_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
            self.latency_s + other.latency_s,
        )


def _env_number(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise LLMError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value < 0:
        raise LLMError(f"{name}={raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class LLMConfig:
    """Endpoint, model and limits. ``api_key`` is hidden from ``repr``."""

    model: str
    base_url: str | None = None  # None: api.openai.com
    api_key: str = field(default="", repr=False)
    temperature: float | None = 0.2  # None: let the server decide (some models reject it)
    timeout_s: float = 120.0
    max_retries: int = 4  # transport retries per call (429, 5xx, timeouts)
    max_repairs: int = 2  # re-asks after an invalid reply
    backoff_s: float = 1.0  # first retry wait; doubles each retry
    max_backoff_s: float = 30.0  # cap on a wait, Retry-After included
    token_budget: int | None = None  # prompt+completion tokens per campaign; None = no cap
    response_format: ResponseFormat = "auto"
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise LLMError("LLM model name is empty; set HASTE_LLM_MODEL")
        if self.response_format not in ("auto", *_MODES):
            raise LLMError(f"response_format must be auto|{'|'.join(_MODES)}")
        if self.max_retries < 0 or self.max_repairs < 0:
            raise LLMError("max_retries and max_repairs must not be negative")

    def __repr__(self) -> str:  # the dataclass repr would print a password in base_url
        url = redact(self.base_url) if self.base_url else "https://api.openai.com/v1"
        return f"LLMConfig(model={self.model!r}, base_url={url!r}, api_key=***)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LLMConfig:
        """Read ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``HASTE_LLM_*``; overrides win.

        Local servers need no key: when ``OPENAI_BASE_URL`` is set and ``OPENAI_API_KEY``
        is not, a placeholder key is sent. Against api.openai.com a missing key is an error.
        """
        env = os.environ if env is None else env
        base_url = overrides.pop("base_url", None) or env.get("OPENAI_BASE_URL") or None
        api_key = overrides.pop("api_key", None) or env.get("OPENAI_API_KEY") or ""
        if not api_key:
            if base_url is None:
                raise LLMError(
                    "OPENAI_API_KEY is not set; set it, or set OPENAI_BASE_URL to a local "
                    "OpenAI-compatible server (vLLM, Ollama, llama.cpp) that needs no key"
                )
            api_key = "not-needed"
        model = overrides.pop("model", None) or env.get("HASTE_LLM_MODEL") or ""
        if not model:
            raise LLMError("no LLM model configured; set HASTE_LLM_MODEL (e.g. gpt-4o-mini)")
        temperature = _env_number(env, "HASTE_LLM_TEMPERATURE", float, 0.2)
        values: dict[str, Any] = {
            "temperature": temperature,
            "timeout_s": _env_number(env, "HASTE_LLM_TIMEOUT", float, 120.0),
            "max_retries": _env_number(env, "HASTE_LLM_MAX_RETRIES", int, 4),
            "max_repairs": _env_number(env, "HASTE_LLM_MAX_REPAIRS", int, 2),
            "token_budget": _env_number(env, "HASTE_LLM_TOKEN_BUDGET", int, None),
            "max_output_tokens": _env_number(env, "HASTE_LLM_MAX_TOKENS", int, None),
            "response_format": env.get("HASTE_LLM_RESPONSE_FORMAT") or "auto",
        }
        values.update(overrides)
        return cls(model=model, base_url=base_url, api_key=api_key, **values)


def _schema_name(schema: type[BaseModel]) -> str:
    # OpenAI requires ^[a-zA-Z0-9_-]{1,64}$ for the json_schema name.
    return re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64] or "reply"


def format_instructions(schema: type[BaseModel]) -> str:
    compact = json.dumps(
        prompt_schema(schema.model_json_schema()), separators=(",", ":"), sort_keys=True
    )
    return (
        "Reply with one JSON object and nothing else (no prose, no code fences). "
        f"It must validate against this JSON schema:\n{compact}"
    )


def _with_instructions(messages: Sequence[Message], schema: type[BaseModel]) -> list[dict]:
    # At the end of the last user turn, not in the system message: the system message is
    # then the same for every call, and stays a cached prefix (see llm.prompts).
    out = [dict(m) for m in messages]
    note = format_instructions(schema)
    if out and out[-1].get("role") == "user":
        out[-1]["content"] = f"{out[-1]['content']}\n\n{note}"
    else:
        out.append({"role": "user", "content": note})
    return out


_FENCE = re.compile(r"^```[a-zA-Z]*\s*(?P<body>.*?)\s*```$", re.S)


def extract_json(text: str) -> str:
    """The JSON object in a reply: tolerate code fences and prose around one object."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group("body").strip()
    if not stripped.startswith("{"):
        start, end = stripped.find("{"), stripped.rfind("}")
        if start != -1 and end > start:
            stripped = stripped[start : end + 1]
    return stripped


def describe_validation_error(exc: ValidationError, limit: int = 10) -> list[str]:
    problems = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    if len(exc.errors()) > limit:
        problems.append(f"... and {len(exc.errors()) - limit} more")
    return problems


def parse_reply(
    text: str | None, schema: type[T], validate: Callable[[T], None] | None = None
) -> tuple[T | None, list[str]]:
    """(parsed, []) or (None, problems) — the problems are what the model is told."""
    if text is None or not text.strip():
        return None, ["the reply was empty; send the JSON object"]
    candidate = extract_json(text)
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as exc:
        return None, [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
    if not isinstance(data, dict):
        return None, [f"expected a JSON object, got {type(data).__name__}"]
    try:
        parsed = schema.model_validate(data)
    except ValidationError as exc:
        return None, describe_validation_error(exc)
    if validate is not None:
        try:
            validate(parsed)
        except (ReplyRejected, HasteError, ValueError) as exc:
            return None, [str(exc)]
    return parsed, []


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(raw) if name == "retry-after" else None
            if parsed is None:
                continue
            value = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(value):
            return max(value, 0.0)
    return None


class _RedactHTTPLog(logging.Filter):
    """The HTTP client under ``openai`` (httpx) logs every request URL at INFO, userinfo
    included: hide URL passwords, and the API keys of the clients made here, in its records
    before any handler sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        for key in self.keys:
            clean = clean.replace(key, "***")
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_HTTP_LOG_FILTER = _RedactHTTPLog()
for _name in ("httpx", "httpx2"):  # the name depends on the openai release
    logging.getLogger(_name).addFilter(_HTTP_LOG_FILTER)

_TRANSIENT = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)
_FORMAT_REJECTED = (openai.BadRequestError, openai.UnprocessableEntityError)


class LLMClient:
    """Chat completions with JSON replies, retries, repair rounds, a ledger and a budget.

    ``conn`` enables the Postgres token ledger on a sibling autocommit connection (so a
    rollback on ``conn`` never loses ledger rows; ``close()`` releases it); ``ledger``
    passes one explicitly. ``campaign_id`` tags every row and scopes the token budget.
    Without a ledger the budget counts this client's own calls.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        conn: psycopg.Connection | None = None,
        ledger: TokenLedger | None = None,
        campaign_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        if ledger is None and conn is not None:
            ledger = TokenLedger.beside(conn)
        self.ledger = ledger
        self.campaign_id = campaign_id
        self._sleep = sleep
        self._spent = 0
        self._mode = "json_schema" if config.response_format == "auto" else config.response_format
        if len(config.api_key) >= _MIN_SCRUB_LEN:
            _HTTP_LOG_FILTER.keys.add(config.api_key)
        # Retries are ours (see module doc); the openai client must not retry behind our back.
        self._openai = openai.OpenAI(
            api_key=config.api_key or "not-needed",
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )

    def close(self) -> None:
        """Release the HTTP pool and a ledger connection this client opened."""
        self._openai.close()
        if self.ledger is not None:
            self.ledger.close()

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def response_mode(self) -> str:
        """The structured-output mode this endpoint currently gets (after any fallback)."""
        return self._mode

    def with_config(self, **changes: Any) -> LLMClient:
        """A client with some settings changed, sharing ledger and campaign."""
        return LLMClient(
            replace(self.config, **changes), ledger=self.ledger,
            campaign_id=self.campaign_id, sleep=self._sleep,
        )

    # -- secrets ---------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        text = redact(text)
        key = self.config.api_key
        if key and len(key) >= _MIN_SCRUB_LEN:
            text = text.replace(key, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        head = f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
        return self.scrub(f"{head}: {exc}")[:1000]

    # -- budget and ledger -----------------------------------------------------------------

    def spent_tokens(self) -> int:
        if self.ledger is not None and self.campaign_id is not None:
            return self.ledger.campaign_totals(self.campaign_id).total_tokens
        return self._spent

    def _check_budget(self) -> None:
        budget = self.config.token_budget
        if budget is None:
            return
        spent = self.spent_tokens()
        if spent >= budget:
            raise TokenBudgetExceeded(spent, budget, self.campaign_id)

    def _record(self, call: CallRecord) -> None:
        self._spent += call.prompt_tokens + call.completion_tokens
        if self.ledger is not None:
            self.ledger.record(call)

    # -- one HTTP call with transport retries -----------------------------------------------

    def _request(self, messages: list[dict], schema: type[BaseModel], seed: int | None) -> Any:
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if self.config.temperature is not None:
            kwargs["temperature"] = self.config.temperature
        if self.config.max_output_tokens is not None:
            kwargs["max_tokens"] = self.config.max_output_tokens
        if seed is not None:
            kwargs["seed"] = seed
        if self._mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(schema),
                    "schema": schema.model_json_schema(),
                    "strict": False,  # pydantic schemas rarely meet strict mode's rules
                },
            }
        elif self._mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return self._openai.chat.completions.create(**kwargs)

    def _send(
        self, messages: list[dict], schema: type[BaseModel], base: CallRecord, seed: int | None
    ) -> tuple[Any, float, Usage]:
        """(completion, latency, usage of failed calls); raises LLMRequestFailed after retries."""
        failed = Usage()
        retries = 0
        while True:
            self._check_budget()
            start = time.monotonic()
            try:
                completion = self._request(messages, schema, seed)
            except openai.APIError as exc:
                latency = time.monotonic() - start
                error = self._describe(exc)
                self._record(replace(base, latency_s=latency, ok=False, error=error))
                failed = failed + Usage(calls=1, latency_s=latency)
                if isinstance(exc, _FORMAT_REJECTED) and self._can_fall_back():
                    previous = self._mode
                    self._mode = _MODES[_MODES.index(previous) + 1]
                    log.warning(
                        "LLM endpoint rejected response_format %s (%s); using %s from now on",
                        previous, error, self._mode,
                    )
                    continue
                if isinstance(exc, _TRANSIENT) and retries < self.config.max_retries:
                    wait = self._backoff(retries, getattr(exc, "response", None))
                    retries += 1
                    log.warning(
                        "LLM call %s failed (%s); retry %d/%d in %.2fs",
                        base.purpose, error, retries, self.config.max_retries, wait,
                    )
                    self._sleep(wait)
                    continue
                tried = f" after {retries} retries" if retries else ""
                raise LLMRequestFailed(
                    f"LLM call {base.purpose!r} to {self._endpoint()} failed{tried}: {error}",
                    failed,
                ) from None
            return completion, time.monotonic() - start, failed

    def _can_fall_back(self) -> bool:
        return self.config.response_format == "auto" and self._mode != _MODES[-1]

    def _backoff(self, retries: int, response: Any) -> float:
        hinted = _retry_after(getattr(response, "headers", None)) if response is not None else None
        wait = hinted if hinted is not None else self.config.backoff_s * (2**retries)
        return min(wait, self.config.max_backoff_s)

    def _endpoint(self) -> str:
        return redact(self.config.base_url) if self.config.base_url else "api.openai.com"

    # -- public ----------------------------------------------------------------------------

    def complete_json(
        self,
        messages: Sequence[Message],
        schema: type[T],
        *,
        agent_level: AgentLevel,
        attempt_id: int | None = None,
        purpose: str,
        validate: Callable[[T], None] | None = None,
        seed: int | None = None,
    ) -> tuple[T, Usage]:
        """Ask for a JSON reply matching ``schema``; (parsed reply, usage of every call).

        ``validate`` may raise ``ReplyRejected`` (or any ``HasteError``/``ValueError``) for
        a reply that parses but is unusable; its message goes back to the model like a
        schema error. Raises ``TokenBudgetExceeded`` before a call when the budget is spent,
        ``LLMRequestFailed`` when the endpoint keeps failing, ``LLMReplyInvalid`` after
        ``max_repairs`` re-asks. Every HTTP call is one ledger row.
        """
        if agent_level not in AGENT_LEVELS:
            raise ValueError(f"agent_level must be one of {AGENT_LEVELS}")
        convo = _with_instructions(messages, schema)
        total = Usage()
        base = CallRecord(
            agent_level=agent_level, purpose=purpose, model=self.config.model,
            prompt_tokens=0, completion_tokens=0, latency_s=0.0, ok=True,
            attempt_id=attempt_id, campaign_id=self.campaign_id,
        )
        problems: list[str] = []
        for round_ in range(self.config.max_repairs + 1):
            try:
                completion, latency, failed = self._send(convo, schema, base, seed)
            except (LLMCallError, TokenBudgetExceeded) as exc:
                exc.usage = total + exc.usage
                raise
            total = total + failed
            usage = getattr(completion, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            details = getattr(usage, "prompt_tokens_details", None)
            cached_tokens = int(getattr(details, "cached_tokens", 0) or 0)
            choice = completion.choices[0] if completion.choices else None
            text = choice.message.content if choice is not None else None
            parsed, problems = parse_reply(text, schema, validate)
            if parsed is None and choice is not None and choice.finish_reason == "length":
                problems = [*problems, "the reply was cut off (length limit); answer shorter"]
            error = self.scrub("invalid reply: " + "; ".join(problems)) if parsed is None else None
            self._record(
                replace(
                    base, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    cached_tokens=cached_tokens, latency_s=latency, ok=parsed is not None,
                    error=error,
                )
            )
            total = total + Usage(prompt_tokens, completion_tokens, 1, latency)
            log.debug(
                "LLM %s/%s model=%s tokens=%d+%d latency=%.2fs ok=%s",
                agent_level, purpose, self.config.model, prompt_tokens, completion_tokens,
                latency, parsed is not None,
            )
            if parsed is not None:
                return parsed, total
            log.info(
                "LLM reply for %s invalid (round %d/%d): %s",
                purpose, round_ + 1, self.config.max_repairs + 1, error,
            )
            # Keep the bad reply in the conversation so the model can fix rather than restart.
            convo = [
                *convo,
                {"role": "assistant", "content": text or ""},
                {"role": "user", "content": repair_message(problems)},
            ]
        raise LLMReplyInvalid(
            f"LLM reply for {purpose!r} still invalid after {self.config.max_repairs} "
            f"repair round(s): " + self.scrub("; ".join(problems)),
            total,
            [self.scrub(p) for p in problems],
        )


def repair_message(problems: list[str]) -> str:
    listed = "\n".join(f"- {p}" for p in problems)
    return (
        "Your previous reply could not be used:\n"
        f"{listed}\n"
        "Send a corrected reply: one JSON object that follows the schema and fixes every "
        "problem above, and nothing else."
    )
