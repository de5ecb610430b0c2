"""Errors raised for bad input. Each says which file, field or value is wrong."""

from __future__ import annotations


class HasteError(Exception):
    """Base class for errors a user can fix by changing their input."""


class CompetitionDefError(HasteError):
    """A competition definition (YAML) or its data is invalid."""

    def __init__(self, path: str, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        self.message = message
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {message}")


class SpecError(HasteError):
    """A solution spec or patch names an unknown step, model or parameter, or a bad value."""


class SkillError(HasteError):
    """A skill is malformed or conflicts with the store (e.g. embedding dimension)."""


class LLMError(HasteError):
    """The LLM endpoint failed or replied with something unusable after all retries."""


class BudgetExceeded(HasteError):
    """An evaluation ran past the attempt's time budget and was stopped."""


class AttemptConfigError(HasteError, ValueError):
    """An attempt's settings are invalid (e.g. an unknown pipeline)."""
