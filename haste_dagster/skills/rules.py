"""Normalised rules: a kept change stated relative to the data, so that the same lesson learnt
on two competitions is recognisably one pattern.

A literal change (``max_depth`` 6 → 9 on one competition, 6 → 11 on another) rarely recurs
as a literal; its *direction* does. A rule is that direction plus where it applies, with
every threshold taken from the profile of the data it was learnt on (never a constant tuned
to a competition):

* model parameters and numeric step fields: ``raise``/``lower`` the value, by the measured
  ratio to the value it replaced; resolved on another competition as that ratio applied to
  its own default. Model parameters also carry a rows-per-feature range (x0.5..x2 of the
  source's): regularisation strength depends on how much data backs each feature;
* the learning rate traded for rounds (both changed, rounds by the inverse factor);
* choices and switches (``categorical.encoding=target``, a model family);
* the target transform, conditioned on the target skew (log1p: skew >= half the source's);
* text settings (analyzer, n-grams, vocabulary), conditioned on the mean text length
  (within x0.5..x2 of the source's);
* forecast lags, stated as a multiple of the detected seasonal period when the lag is one,
  else as a multiple of the horizon; resolved with the other competition's own period or
  horizon.

``resolve`` turns a rule back into a Patch for a given problem and profile (None when it
does not translate: another model family, no seasonal period).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from haste_dagster.skills.model import Condition

# Model parameters whose change is a regularisation decision (depends on rows per feature).
_TRADE = ("model.params.learning_rate",)
_ROUNDS = ("model.params.n_estimators", "model.params.max_iter")


@dataclass(frozen=True)
class Rule:
    key: str  # the pattern: equal keys = the same lesson
    template: dict[str, Any]  # how to restate it on another competition (see resolve)
    conditions: list[Condition]
    text: str  # "what to do", as a phrase


def _cond(key: str, op: str, value: Any) -> Condition:
    return Condition(key=key, op=op, value=value)  # type: ignore[arg-type]


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _get(spec: dict[str, Any], path: str) -> Any:
    data: Any = spec
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _base_conditions(profile: dict[str, Any]) -> list[Condition]:
    out = []
    if isinstance(profile.get("task"), str):
        out.append(_cond("task", "==", profile["task"]))
    return out


def _range(key: str, value: Any, low: float, high: float, digits: int = 4) -> list[Condition]:
    if not _num(value) or not math.isfinite(float(value)) or value <= 0:
        return []
    return [_cond(key, ">=", round(value * low, digits)), _cond(key, "<=", round(value * high,
                                                                                 digits))]


def _direction(ratio: float) -> str:
    return "up" if ratio > 1 else "down"


def normalise_change(
    patch: dict[str, Any], before: dict[str, Any], profile: dict[str, Any]
) -> Rule | None:
    """The rule a kept ``patch`` (applied to the spec ``before``, both JSON) expresses, or
    None when it has no data-relative form (removing a list item, an unset)."""
    ops = patch.get("ops") or []
    if not ops:
        return None
    base = _base_conditions(profile)
    family = _get(before, "model.family")
    paths = sorted(o.get("path", "") for o in ops if o.get("op") == "set")
    # learning rate traded for rounds
    if len(ops) == 2 and paths[0] in _ROUNDS + _TRADE and paths[1] in _ROUNDS + _TRADE:
        lr = next(o["value"] for o in ops if o["path"] == _TRADE[0])
        old = _get(before, _TRADE[0])
        if _num(lr) and _num(old) and old > 0 and lr != old:
            factor = float(f"{lr / old:.3g}")
            way = _direction(factor)
            return Rule(
                key=f"trade:learning_rate:{way}",
                template={"op": "trade", "factor": factor},
                conditions=[*base, *_range("rows", profile.get("rows"), 0.25, 4.0, 0)],
                text=(f"{'lower' if way == 'down' else 'raise'} the learning rate (x{factor:.3g} "
                      "of the default) and scale the boosting rounds by the inverse"),
            )
    op = ops[0]
    kind = op.get("op")
    if kind == "set_model":
        fam = op.get("family")
        return Rule(
            key=f"family:{fam}",
            template={"op": "family", "family": fam, "params": {}},
            conditions=[*base, *_range("rows", profile.get("rows"), 0.25, 4.0, 0)],
            text=f"switch the model to {fam} with its default settings",
        )
    path = op.get("path", "")
    head = path.split(".")[0]
    if kind == "add" and path == "forecast.lags" and _num(op.get("value")):
        lag = int(op["value"])
        period = profile.get("seasonal_period")
        horizon = profile.get("horizon") or 1
        cond = [*base, _cond("is_forecast", "==", True)]
        if _num(period) and period >= 2 and lag % int(period) == 0:
            mult = lag // int(period)
            return Rule(
                key=f"lags:season*{mult}",
                template={"op": "lag", "unit": "season", "mult": mult},
                conditions=[*cond, _cond("seasonal_period", ">=", 2)],
                text=f"add a lag at {mult}x the detected seasonal period of the target",
            )
        mult = max(1, round(lag / horizon))
        return Rule(
            key=f"lags:horizon*{mult}",
            template={"op": "lag", "unit": "horizon", "mult": mult},
            conditions=cond,
            text=f"add a lag at {mult}x the forecast horizon",
        )
    if kind != "set":
        return None
    value = op.get("value")
    old = _get(before, path)
    if path == "target_transform":
        skew = profile.get("target_skew")
        cond = list(base)
        if _num(skew) and value == "log1p" and skew > 0:
            cond.append(_cond("target_skew", ">=", round(max(0.25, skew / 2), 3)))
        elif _num(skew) and value == "none":
            cond.append(_cond("target_skew", "<", round(max(0.5, abs(skew) * 2), 3)))
        return Rule(
            key=f"target_transform:{value}",
            template={"op": "set", "path": path, "value": value},
            conditions=cond,
            text=("log-transform the target" if value == "log1p"
                  else f"set the target transform to {value}"),
        )
    cond = list(base)
    if head == "text":
        cond += [_cond("has_text", "==", True),
                 *_range("text_mean_chars", profile.get("text_mean_chars"), 0.5, 2.0, 1)]
    elif head == "categorical":
        cond.append(_cond("n_categorical", ">=", 1))
        card = profile.get("max_cardinality")
        if _num(card) and card >= 4:
            cond.append(_cond("max_cardinality", ">=", int(card) // 2))
    elif head == "numeric":
        cond.append(_cond("n_numeric", ">=", 1))
    elif head == "forecast":
        cond.append(_cond("is_forecast", "==", True))
    elif head == "model":
        cond += _range("rows_per_feature", profile.get("rows_per_feature"), 0.5, 2.0, 3)
    if _num(value) and _num(old) and old > 0 and value != old:
        ratio = float(f"{value / old:.3g}")
        way = _direction(ratio)
        where = f"{family}." if head == "model" else ""
        name = path.split(".")[-1]
        return Rule(
            key=f"scale:{where}{path}:{way}",
            template={"op": "scale", "path": path, "ratio": ratio, "family": family,
                      "integer": isinstance(value, int)},
            conditions=cond,
            text=f"{'raise' if way == 'up' else 'lower'} {name} to x{ratio:.3g} of the default",
        )
    if isinstance(value, bool | str) or value is None or _num(value):
        where = f"{family}." if head == "model" else ""
        return Rule(
            key=f"set:{where}{path}={value!r}",
            template={"op": "set", "path": path, "value": value, "family": family},
            conditions=cond,
            text=f"set {path} to {value!r}",
        )
    return None


def resolve(template: dict[str, Any], default: dict[str, Any], profile: dict[str, Any]
            ) -> dict[str, Any] | None:
    """A Patch (JSON) restating the rule on a competition whose default spec is ``default``
    (JSON) and profile ``profile``; None when it does not translate there."""
    op = template.get("op")
    family = _get(default, "model.family")
    if op == "trade":
        lr = _get(default, _TRADE[0])
        rounds = next((p for p in _ROUNDS if _num(_get(default, p))), None)
        if not _num(lr) or rounds is None:
            return None
        factor = float(template["factor"])
        return {"ops": [
            {"op": "set", "path": _TRADE[0], "value": float(f"{lr * factor:.3g}")},
            {"op": "set", "path": rounds, "value": max(1, int(round(_get(default, rounds)
                                                                   / factor)))},
        ]}
    if op == "family":
        return {"ops": [{"op": "set_model", "family": template["family"], "params": {}}]}
    if op == "lag":
        unit = profile.get("seasonal_period") if template["unit"] == "season" else (
            profile.get("horizon") or 1)
        if not _num(unit) or unit < 1:
            return None
        return {"ops": [{"op": "add", "path": "forecast.lags",
                         "value": int(unit) * int(template["mult"])}]}
    path = template.get("path", "")
    if path.startswith("model.") and template.get("family") not in (None, family):
        return None  # a parameter of another model family
    if op == "set":
        return {"ops": [{"op": "set", "path": path, "value": template["value"]}]}
    if op == "scale":
        base = _get(default, path)
        if not _num(base) or base <= 0:
            return None
        value: float | int = base * float(template["ratio"])
        value = int(round(value)) if template.get("integer") else float(f"{value:.4g}")
        return {"ops": [{"op": "set", "path": path, "value": value}]}
    return None
