"""Errors raised for bad input. Each says which file, field or value is wrong.

Every exception class in ``haste_dagster`` derives from :class:`HasteError`, so a command
catches ``HasteError`` alone and an unexpected ``KeyError`` or ``ValueError`` (a bug) still
shows its traceback. Where callers already catch a builtin type, it stays as a mixin (the
pattern of ``sklearn.exceptions.NotFittedError(ValueError, AttributeError)``).
"""

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


class ConfigError(HasteError, ValueError):
    """An option, name or environment setting has a value that cannot be used."""


class NotFoundError(HasteError, KeyError):
    """A named thing (metric, attempt, stored submission...) does not exist."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument (quoted); print the message.
        return str(self.args[0]) if self.args else ""


class AttemptStateError(HasteError, ValueError):
    """The recorded attempt does not allow this step (another competition's, no best spec...)."""


class AttemptConfigError(ConfigError):
    """An attempt's settings are invalid (e.g. an unknown pipeline)."""
