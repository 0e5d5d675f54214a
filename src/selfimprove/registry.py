"""Name -> object registries, so a recipe names its parts and a new part is one decorated definition."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A small named table with a decorator for registration and a clear error for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def require(self, name: str, label: str | None = None) -> str:
        """`name` if it is registered, else a ValueError naming the known ones (for recipe validators,
        which turn it into an error at the field's path); `label` words the kind for the message."""
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise ValueError(f"unknown {label or self.kind} {name!r} (known: {known})")
        return name

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
