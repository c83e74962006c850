"""Exceptions raised by trilemma.

Every error derives from :class:`TrilemmaError` and from the matching built-in
exception, so callers can catch either ``trilemma.errors.TrilemmaError`` or the
usual ``ValueError`` / ``KeyError`` / ``TypeError`` / ``RuntimeError``.
"""

from __future__ import annotations

__all__ = [
    "TrilemmaError",
    "InvalidSpecError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "UnknownNameError",
    "DuplicateNameError",
    "BudgetError",
    "MeasureFailedError",
    "ConfigError",
    "StoreError",
    "DatasetNotFoundError",
    "MissingDependencyError",
    "OutputPathError",
    "DataFormatError",
    "SchemaError",
    "ConformanceError",
    "PluginError",
]


class TrilemmaError(Exception):
    """Base class of every error raised by trilemma."""


class InvalidSpecError(TrilemmaError, ValueError):
    """An architecture string or spec is malformed."""


class InvalidArgumentError(TrilemmaError, ValueError):
    """An argument has a value outside its allowed range."""


class InvalidTypeError(TrilemmaError, TypeError):
    """An argument has the wrong type."""


class UnknownNameError(TrilemmaError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(TrilemmaError, KeyError):
    """A name was registered twice."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BudgetError(TrilemmaError, ValueError):
    """A parameter budget cannot be met."""


class MeasureFailedError(TrilemmaError, RuntimeError):
    """A measure produced a non-finite value or could not be computed."""


class ConfigError(TrilemmaError, ValueError):
    """A study configuration is invalid."""


class StoreError(TrilemmaError, RuntimeError):
    """The result store cannot be opened or written."""


class DatasetNotFoundError(TrilemmaError, FileNotFoundError):
    """A dataset is not on disk where it was looked for."""


class MissingDependencyError(TrilemmaError, ImportError):
    """An optional package needed for the requested feature is not installed."""


class OutputPathError(TrilemmaError, ValueError):
    """An output path would overwrite a study store or a file that is not an output of this kind."""


class PluginError(TrilemmaError, RuntimeError):
    """User code named in a study config (a plug-in module or space function) raised an exception.

    The message names the plug-in and function and repeats the plug-in's own message; the
    original exception is the ``__cause__``.
    """


class DataFormatError(TrilemmaError, ValueError):
    """A data file is not in its official format, or holds objects that format never contains."""


class SchemaError(TrilemmaError, ValueError):
    """A result schema is inconsistent: two producers declare one column name, or a stored schema is unreadable."""


class ConformanceError(TrilemmaError, AssertionError):
    """An extension (measure, space, task kind, executor) breaks the contract its check in
    :mod:`trilemma.testing` verifies."""
