"""The base of every spec model, :class:`SpecModel`, and the one conversion of pydantic's
validation errors into :class:`~conveyor.errors.InvalidSpec` (field path, value, hint); plus the
small helpers the models share to name a field in an error and to accept docker's one-string
syntax."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from ..errors import InvalidSpec


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "constrained-")):
            out += ("." if out else "") + str(part)
    return out or "spec"


def _invalid_from(err: ValidationError, model: type[BaseModel]) -> InvalidSpec:
    problems: list[tuple[str, object, str]] = []
    for e in err.errors():
        nested = (e.get("ctx") or {}).get("error")
        if isinstance(nested, InvalidSpec):  # a sub-model or model validator named the field itself
            base = _field_path(e["loc"])
            for field, value, hint in nested.problems:
                path = field if base == "spec" else (base if field == "spec" else f"{base}.{field}")
                problems.append((path, value, hint))
            continue
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling against the documented job fields"
        elif e["type"] == "missing":
            msg = "this field is required"
        problems.append((_field_path(e["loc"]), e.get("input"), msg))
    return InvalidSpec(problems, model.kind)


class SpecModel(BaseModel):
    """Base for every spec model: strict about unknown fields, one error type on failure."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    kind: ClassVar[str] = "job spec"  # what its errors call it: "invalid job spec: ..."

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise _invalid_from(err, type(self)) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any):  # type: ignore[override]
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as err:
            raise _invalid_from(err, cls) from None

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic runs model validators after storing the new value: put the old one back
        # on failure, so a rejected assignment leaves the spec as valid as it was.
        before = dict(self.__dict__)
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise _invalid_from(err, type(self)) from None


def _bad(field: str, value: object, hint: str) -> InvalidSpec:
    """For model validators: an error that names the field it is about."""
    return InvalidSpec.single(field, value, hint)


def _from_text(parser):
    """Let a model be written as one string in docker's syntax (CLI flag or YAML)."""
    def convert(value: Any) -> Any:
        return parser(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else value

    return BeforeValidator(convert)
