"""SolutionSpec: a declarative, JSON-serialisable ML pipeline, and typed patches to it.

Agents never edit code: they propose a `Patch` (a list of JSON operations) and
`apply_patch` validates every operation against the search space (`solution.space`). A
bad path, unknown model/parameter or out-of-range value raises `SpecError` naming the
path, the value and what is allowed, because patches come from LLMs and Postgres rows.

Specs are problem-free: they hold settings for every column type, and the compiler uses
the steps the problem's columns need. Model parameters are always stored complete
(defaults filled in), so a spec's JSON is exactly what was fitted.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from haste_dagster.errors import SpecError
from haste_dagster.solution.space import FAMILIES, STEPS, TARGET_TRANSFORM, Param

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _check_step(step: str, data: Any) -> dict[str, Any]:
    """Validate and normalise one step's fields (missing fields keep their defaults)."""
    if not isinstance(data, dict):
        raise SpecError(f"{step}: expected an object of fields, got {data!r}")
    params = STEPS[step]
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in params:
            raise SpecError(
                f"{step}.{key}: unknown field of step {step!r}; allowed: {', '.join(params)}"
            )
        out[key] = params[key].check(f"{step}.{key}", value)
    return out


class _Step(BaseModel):
    model_config = _FROZEN
    step: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _validate(cls, data: Any) -> Any:
        if isinstance(data, cls):  # an already validated step passed to a constructor
            return data.model_dump()
        return _check_step(cls.step, data)


class NumericStep(_Step):
    step: ClassVar[str] = "numeric"
    impute: str = STEPS["numeric"]["impute"].default
    scale: str = STEPS["numeric"]["scale"].default
    log1p_skewed: bool = STEPS["numeric"]["log1p_skewed"].default
    skew_threshold: float = STEPS["numeric"]["skew_threshold"].default
    missing_indicator: bool = STEPS["numeric"]["missing_indicator"].default


class CategoricalStep(_Step):
    step: ClassVar[str] = "categorical"
    encoding: str = STEPS["categorical"]["encoding"].default
    max_categories: int = STEPS["categorical"]["max_categories"].default
    impute: str = STEPS["categorical"]["impute"].default


class TextStep(_Step):
    step: ClassVar[str] = "text"
    max_features: int = STEPS["text"]["max_features"].default
    ngram_max: int = STEPS["text"]["ngram_max"].default
    min_df: int = STEPS["text"]["min_df"].default
    sublinear_tf: bool = STEPS["text"]["sublinear_tf"].default
    analyzer: str = STEPS["text"]["analyzer"].default
    char_ngram_max: int = STEPS["text"]["char_ngram_max"].default


class DateStep(_Step):
    step: ClassVar[str] = "date"
    parts: list[str] = Field(default_factory=lambda: list(STEPS["date"]["parts"].default))
    cyclical: bool = STEPS["date"]["cyclical"].default


class ForecastStep(_Step):
    step: ClassVar[str] = "forecast"
    calendar: list[str] = Field(default_factory=lambda: list(STEPS["forecast"]["calendar"].default))
    cyclical: bool = STEPS["forecast"]["cyclical"].default
    trend: bool = STEPS["forecast"]["trend"].default
    lags: list[int] = Field(default_factory=list)
    rolling: list[int] = Field(default_factory=list)


class ValidationStep(_Step):
    step: ClassVar[str] = "validation"
    kind: str = STEPS["validation"]["kind"].default
    n_folds: int = STEPS["validation"]["n_folds"].default


class ModelSpec(BaseModel):
    model_config = _FROZEN
    family: str = "xgboost"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _validate(cls, data: Any) -> Any:
        if isinstance(data, cls):
            data = data.model_dump()
        if not isinstance(data, dict):
            raise SpecError(f"model: expected an object with family and params, got {data!r}")
        unknown = set(data) - {"family", "params"}
        if unknown:
            raise SpecError(f"model.{sorted(unknown)[0]}: unknown field; allowed: family, params")
        family = data.get("family", "xgboost")
        if not isinstance(family, str) or family not in FAMILIES:  # (a list is unhashable)
            raise SpecError(
                f"model.family: unknown model family {family!r}; allowed: {', '.join(FAMILIES)}"
            )
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise SpecError(f"model.params: expected an object, got {params!r}")
        return {"family": family, "params": _check_params(family, params, fill=True)}


def _check_params(family: str, params: dict[str, Any], *, fill: bool) -> dict[str, Any]:
    space = FAMILIES[family].params
    out = FAMILIES[family].defaults() if fill else {}
    for key, value in params.items():
        if key not in space:
            raise SpecError(
                f"model.params.{key}: unknown parameter for {family}; allowed: {', '.join(space)}"
            )
        out[key] = space[key].check(f"model.params.{key}", value)
    return out


class SolutionSpec(BaseModel):
    """A whole pipeline: feature steps per column type, target transform, model, validation."""

    model_config = _FROZEN
    numeric: NumericStep = Field(default_factory=NumericStep)
    categorical: CategoricalStep = Field(default_factory=CategoricalStep)
    text: TextStep = Field(default_factory=TextStep)
    date: DateStep = Field(default_factory=DateStep)
    forecast: ForecastStep = Field(default_factory=ForecastStep)
    target_transform: str = TARGET_TRANSFORM.default
    model: ModelSpec = Field(default_factory=ModelSpec)
    validation: ValidationStep = Field(default_factory=ValidationStep)

    @model_validator(mode="before")
    @classmethod
    def _validate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected an object, got {type(data).__name__}")
        unknown = set(data) - set(cls.model_fields)
        if unknown:
            raise SpecError(
                f"{sorted(unknown)[0]}: unknown step; allowed: {', '.join(cls.model_fields)}"
            )
        if "target_transform" in data:
            data = {
                **data,
                "target_transform": TARGET_TRANSFORM.check(
                    "target_transform", data["target_transform"]
                ),
            }
        return data

    def key(self) -> str:
        """Canonical JSON: equal keys mean identical pipelines (used to never re-try a spec)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def summary(self) -> str:
        """One line for logs and prompts."""
        params = ", ".join(f"{k}={v}" for k, v in self.model.params.items())
        return f"{self.model.family}({params}); target={self.target_transform}"


# ---------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------


def _tag_required(schema: dict[str, Any]) -> None:
    # A patch's ops are told apart by their "op" tag, so a JSON op must carry it (the
    # default only serves Python code); a decoding grammar built from the schema then
    # cannot leave it out.
    schema["required"] = ["op", *[k for k in schema.get("required", []) if k != "op"]]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_tag_required)


class SetOp(_Op):
    """Set a field: ``<step>.<field>``, ``model.params.<name>``, ``model.family`` (params
    reset to the family's defaults), ``target_transform``; or a whole ``<step>`` to an
    object of fields (merged into the current ones)."""

    op: Literal["set"] = "set"
    path: str
    value: Any


class UnsetOp(_Op):
    """Reset a field to its default (``model.params.<name>``, ``<step>.<field>``)."""

    op: Literal["unset"] = "unset"
    path: str


class SetModelOp(_Op):
    """Switch the model: ``params`` are merged onto the family's defaults."""

    op: Literal["set_model"] = "set_model"
    family: str
    params: dict[str, Any] = Field(default_factory=dict)


class AddOp(_Op):
    """Add an item to a list field (``forecast.lags``, ``date.parts``…)."""

    op: Literal["add"] = "add"
    path: str
    value: Any


class RemoveOp(_Op):
    """Remove an item from a list field."""

    op: Literal["remove"] = "remove"
    path: str
    value: Any


Op = Annotated[SetOp | UnsetOp | SetModelOp | AddOp | RemoveOp, Field(discriminator="op")]


class Patch(BaseModel):
    """A typed change to a spec: operations applied in order. Stored as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ops: list[Op] = Field(min_length=1)

    def describe(self) -> str:
        """Short human text, e.g. ``model.params.max_depth=6; forecast.lags+=[14]``."""
        parts: list[str] = []
        for op in self.ops:
            if isinstance(op, SetOp):
                parts.append(f"{op.path}={json.dumps(op.value)}")
            elif isinstance(op, UnsetOp):
                parts.append(f"{op.path}=<default>")
            elif isinstance(op, SetModelOp):
                parts.append(f"model={op.family}({json.dumps(op.params, sort_keys=True)})")
            elif isinstance(op, AddOp):
                parts.append(f"{op.path}+={json.dumps(op.value)}")
            else:
                parts.append(f"{op.path}-={json.dumps(op.value)}")
        return "; ".join(parts)

    def paths(self) -> list[str]:
        """The spec paths the patch touches (``model`` for set_model)."""
        return ["model" if isinstance(op, SetModelOp) else op.path for op in self.ops]


def parse_patch(data: Any) -> Patch:
    """A Patch from JSON text, a dict, a list of ops or a single op; SpecError if malformed."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SpecError(f"patch: not valid JSON ({exc})") from None
    if isinstance(data, list):
        data = {"ops": data}
    elif isinstance(data, dict) and "op" in data:
        data = {"ops": [data]}
    try:
        return Patch.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'patch'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(
            f'patch: {problems}. A patch is {{"ops": [...]}} with ops '
            "set/unset/set_model/add/remove"
        ) from None


_LIST_KINDS = ("int_list", "choice_list")


def _field(data: dict[str, Any], path: str) -> tuple[dict[str, Any], str, Param | None]:
    """(container dict, key, Param) that ``path`` names inside a spec's JSON; SpecError if none."""
    parts = path.split(".")
    head = parts[0]
    if head == "target_transform" and len(parts) == 1:
        return data, "target_transform", TARGET_TRANSFORM
    if head == "model":
        if parts[1:] == ["family"]:
            return data["model"], "family", None
        if len(parts) == 3 and parts[1] == "params":
            family = data["model"]["family"]
            space = FAMILIES[family].params
            if parts[2] not in space:
                raise SpecError(
                    f"{path}: unknown parameter for {family}; allowed: {', '.join(space)}"
                )
            return data["model"]["params"], parts[2], space[parts[2]]
        raise SpecError(f"{path}: unknown model path; allowed: model.family, model.params.<name>")
    if head not in STEPS:
        allowed = ", ".join([*STEPS, "target_transform", "model"])
        raise SpecError(f"{path}: unknown step {head!r}; allowed: {allowed}")
    if len(parts) == 1:
        return data, head, None  # a whole step (object value)
    if len(parts) != 2 or parts[1] not in STEPS[head]:
        raise SpecError(
            f"{path}: unknown field of step {head!r}; allowed: {', '.join(STEPS[head])}"
        )
    return data[head], parts[1], STEPS[head][parts[1]]


def _apply_op(data: dict[str, Any], op: SetOp | UnsetOp | SetModelOp | AddOp | RemoveOp) -> None:
    if isinstance(op, SetOp) and op.path == "model":  # a whole model object: as set_model
        value = op.value if isinstance(op.value, dict) else {}
        if set(value) - {"family", "params"} or not isinstance(value.get("family"), str):
            raise SpecError(
                f'model: expected {{"family": ..., "params": {{...}}}}, got {op.value!r}'
            )
        op = SetModelOp(family=value["family"], params=value.get("params") or {})
    if isinstance(op, SetModelOp):
        if op.family not in FAMILIES:
            raise SpecError(
                f"model.family: unknown model family {op.family!r}; allowed: {', '.join(FAMILIES)}"
            )
        data["model"] = {
            "family": op.family,
            "params": _check_params(op.family, op.params, fill=True),
        }
        return
    container, key, param = _field(data, op.path)
    if isinstance(op, SetOp):
        if container is data["model"] and key == "family":
            if not isinstance(op.value, str) or op.value not in FAMILIES:  # (unhashable too)
                raise SpecError(
                    f"model.family: unknown model family {op.value!r}; "
                    f"allowed: {', '.join(FAMILIES)}"
                )
            data["model"] = {"family": op.value, "params": FAMILIES[op.value].defaults()}
        elif param is None:  # whole step: merge the given fields
            container[key] = {**container[key], **_check_step(key, op.value)}
        else:
            container[key] = param.check(op.path, op.value)
        return
    if param is None:
        raise SpecError(f"{op.path}: {op.op} needs a field path, e.g. {op.path}.<field>")
    if isinstance(op, UnsetOp):
        container[key] = param.default
        return
    if param.kind not in _LIST_KINDS:
        raise SpecError(f"{op.path}: {op.op} needs a list field; this is {param.allowed()}")
    items = list(container[key])
    values = op.value if isinstance(op.value, list) else [op.value]
    if isinstance(op, AddOp):
        items += values
    else:
        missing = [v for v in values if v not in items]
        if missing:
            raise SpecError(f"{op.path}: cannot remove {missing!r}; current value {items!r}")
        items = [v for v in items if v not in values]
    container[key] = param.check(op.path, items)


def apply_patch(spec: SolutionSpec, patch: Patch) -> SolutionSpec:
    """The spec with ``patch`` applied; SpecError (naming path, value, allowed) if invalid."""
    if not isinstance(patch, Patch):  # tolerate raw JSON from callers
        patch = parse_patch(patch)
    data = spec.model_dump(mode="json")
    for op in patch.ops:
        _apply_op(data, op)
    return SolutionSpec.model_validate(data)
