"""A small name → object registry with helpful errors (used for spaces, measures, datasets)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from trilemma.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to objects; unknown names get the valid names and the closest match.

    Args:
        kind: What the registry holds, used in error messages (e.g. ``"measure"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``.

        Raises:
            DuplicateNameError: ``name`` is already registered.
        """
        if not isinstance(name, str) or not name:
            raise UnknownNameError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered; pick another name "
                f"(registered: {', '.join(sorted(self._items))})"
            )
        self._items[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`register`."""

        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the valid
                names and the closest match.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            valid = sorted(self._items)
            close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} Valid {self.kind} names: {', '.join(valid)}"
            ) from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style ``pattern``."""
        names = sorted(self._items)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and plug-ins that re-register)."""
        self.get(name)
        del self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
