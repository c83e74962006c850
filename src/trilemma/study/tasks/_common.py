"""Helpers shared by the built-in task kinds."""

from __future__ import annotations

import difflib
from typing import Any

from trilemma.errors import ConfigError
from trilemma.study._config import StudyConfig

__all__ = ["check_datasets", "section"]


def section(config: StudyConfig, name: str) -> Any:
    """The config's ``[name]`` section.

    Raises:
        ConfigError: the study has no such section.
    """
    value = getattr(config, name)
    if value is None:
        raise ConfigError(f"the study has no [{name}] section")
    return value


def check_datasets(config: StudyConfig) -> list[str]:
    """``data.names`` entries that name no registered dataset, as config lines."""
    from trilemma.data import list_datasets

    known = list_datasets()
    lines = []
    for i, name in enumerate(config.datasets):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"data.names[{i}]: unknown dataset {name!r}{hint}; registered: {', '.join(known)}")
    return lines
