"""One small generic registry: components are registered by name and looked up with a helpful error."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from strop.errors import StropError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components (classes or builders) of one kind, e.g. methods or bundled models.

    Example:
        METHODS = Registry("method")

        @METHODS.register("full")
        class Full: ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """Returns the entry called `name`.

        Raises:
            StropError: no entry has that name; the message lists the known names.
        """
        if name not in self._entries:
            raise StropError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        hint = difflib.get_close_matches(name, self._entries, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown {self.kind} '{name}'{suggestion}; known: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
