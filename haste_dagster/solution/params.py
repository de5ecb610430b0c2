"""`Param`: one tunable value of the search space (type, range, log scale, default) and how
it validates, samples and mutates (see ``solution.space``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from haste_dagster.errors import SpecError

ParamKind = Literal["int", "float", "bool", "choice", "int_list", "choice_list"]


@dataclass(frozen=True)
class Param:
    """One tunable value. Ranges are inclusive; ``log`` means search in log space."""

    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False  # None is a legal value (e.g. max_depth=None: unlimited)
    zero_ok: bool = False  # 0 is legal below a log-scale range (a regulariser switched off)
    max_len: int = 12  # list kinds
    classification_only: bool = False  # meaningless for regressors (class_weight)
    importance: float = 1.0  # prior weight for the search: how often changing it pays off
    doc: str = ""

    # ---- validation -------------------------------------------------------------------
    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("choice", "choice_list"):
            opts = ", ".join(repr(c) for c in self.choices)
            return f"one of {opts}" if self.kind == "choice" else f"a list of {opts}"
        kind = "integer" if self.kind in ("int", "int_list") else "number"
        text = f"{kind} in [{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.kind == "int_list":
            text = f"a list of at most {self.max_len} {text.replace('integer', 'integers')}"
        if self.zero_ok:
            text += " or 0"
        if self.nullable:
            text += " or null"
        return text

    def check(self, path: str, value: Any) -> Any:
        """The normalised value, or SpecError naming ``path``, the value and what is allowed."""

        def bad(why: str = "invalid value") -> SpecError:
            return SpecError(f"{path}: {why} {value!r}; allowed: {self.allowed()}")

        if value is None:
            if self.nullable:
                return None
            raise bad("null is not allowed, got")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise bad("expected a boolean, got")
        if self.kind == "choice":
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                if value in self.choices:
                    return value
            raise bad("unknown choice")
        if self.kind == "choice_list":
            if not isinstance(value, list | tuple):
                raise bad("expected a list, got")
            unknown = [v for v in value if v not in self.choices]
            if unknown:
                raise bad(f"unknown choice(s) {unknown!r} in")
            # canonical order (that of ``choices``) so equal sets give equal specs
            return [c for c in self.choices if c in value]
        if self.kind == "int_list":
            if not isinstance(value, list | tuple):
                raise bad("expected a list, got")
            items = sorted({self.check_item(path, v) for v in value})
            if len(items) > self.max_len:
                raise bad(f"more than {self.max_len} items in")
            return items
        return self._number(path, value, bad, integer=self.kind == "int")

    def check_item(self, path: str, value: Any) -> int:
        """One item of an int_list, checked against the range."""

        def bad(why: str = "invalid value") -> SpecError:
            return SpecError(f"{path}: {why} {value!r} (list item); allowed: {self.allowed()}")

        return int(self._number(path, value, bad, integer=True))

    def _number(self, path: str, value: Any, bad: Any, *, integer: bool) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number, got")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("not a finite number:")
        if integer:
            if isinstance(value, float) and not value.is_integer():
                raise bad("expected an integer, got")
            value = int(value)
        else:
            value = float(value)
        if self.zero_ok and value == 0:
            return value
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            raise bad("out of range:")
        return value

    # ---- sampling and mutation (numeric kinds work in a normalised [0, 1] coordinate) --
    def _to_unit(self, value: float) -> float:
        assert self.low is not None and self.high is not None
        if self.log:
            return (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        return (value - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> Any:
        assert self.low is not None and self.high is not None
        u = min(1.0, max(0.0, u))
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        if self.kind == "int":
            return int(min(self.high, max(self.low, round(x))))
        return float(min(self.high, max(self.low, _round_sig(x))))

    def sample(self, rng: np.random.Generator) -> Any:
        if self.nullable and rng.random() < 0.2:
            return None
        if self.zero_ok and rng.random() < 0.25:
            return 0 if self.kind == "int" else 0.0
        if self.kind == "bool":
            return bool(rng.random() < 0.5)
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "choice_list":
            picked = [c for c in self.choices if rng.random() < 0.5]
            return picked or [self.choices[int(rng.integers(len(self.choices)))]]
        if self.kind == "int_list":
            return list(self.default)  # list contents are problem-specific: see random_spec
        return self._from_unit(float(rng.random()))

    def mutate(self, value: Any, rng: np.random.Generator, sigma: float) -> Any:
        """A nearby value (a Gaussian step of ``sigma`` in the unit coordinate)."""
        if self.kind == "bool":
            return not value
        if self.kind == "choice":
            others = [c for c in self.choices if c != value]
            return others[int(rng.integers(len(others)))] if others else value
        if self.kind == "choice_list":
            toggle = self.choices[int(rng.integers(len(self.choices)))]
            out = [c for c in value if c != toggle] if toggle in value else [*value, toggle]
            return self.check("", out) if out else list(value)
        if self.kind == "int_list":
            return list(value)  # problem-specific: the policy handles lists
        if value is None:
            return self._from_unit(float(rng.random()))
        if self.nullable and rng.random() < 0.1:
            return None
        if self.zero_ok and value == 0:
            # from "off", jump to a value that does something (the low end is negligible)
            return self._from_unit(0.4 + 0.5 * float(rng.random()))
        if self.zero_ok and rng.random() < 0.1:
            return 0 if self.kind == "int" else 0.0
        u = self._to_unit(value)
        new = self._from_unit(u + float(rng.normal(0.0, sigma)))
        if new == value and self.kind == "int":  # a step too small to change an integer
            assert self.low is not None and self.high is not None
            step = 1 if rng.random() < 0.5 else -1
            new = int(min(self.high, max(self.low, value + step)))
        return new

    def describe(self) -> str:
        """One line for an LLM prompt: what values are allowed, the default, the scale, why.

        A line, not a JSON object of the same facts: prompts repeat it for every parameter
        and a small local model pays for each token (the keys alone were a third of it).
        """
        parts = [self.allowed(), f"default {json.dumps(self.default)}"]
        if self.log:
            parts.append("log scale")
        if self.doc:
            parts.append(self.doc)
        return "; ".join(parts)


def _round_sig(x: float, digits: int = 3) -> float:
    """Round to a few significant digits: readable specs, and near-duplicates collapse."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def _fmt(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e6 else f"{x:g}"
