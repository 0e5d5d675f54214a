"""Name -> object registries, so a recipe names its parts and a new part is one decorated definition."""

from __future__ import annotations

import contextvars
import importlib
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

_light: contextvars.ContextVar[bool] = contextvars.ContextVar("light_validation", default=False)


@contextmanager
def light_validation() -> Iterator[None]:
    """Validate recipes without the checks that need the registries of torch code (estimator, engine,
    policy-loss and search names, a composite method's inner recipes, a reasoning-gym dataset's name).
    The CLI validates twice: first light, so a mistake in a field's name, type or range is reported
    within a second, before torch and transformers are imported; then fully."""
    token = _light.set(True)
    try:
        yield
    finally:
        _light.reset(token)


def full_checks() -> bool:
    """False inside `light_validation()`: validators that need heavy registries skip their check."""
    return not _light.get()


class Registry(Generic[T]):
    """A small named table with a decorator for registration and a clear error for unknown names.

    `load` names a module that registers the built-in entries; it is imported on the first lookup, so
    importing the registry (a recipe's schema, the CLI) does not load what the entries need (torch).
    """

    def __init__(self, kind: str, load: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            module, self._load = self._load, None
            importlib.import_module(module)
        return self._items

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._loaded()[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def require(self, name: str, label: str | None = None) -> str:
        """`name` if it is registered, else a ValueError naming the known ones (for recipe validators,
        which turn it into an error at the field's path); `label` words the kind for the message."""
        if name not in self._loaded():
            known = ", ".join(sorted(self._items)) or "none"
            raise ValueError(f"unknown {label or self.kind} {name!r} (known: {known})")
        return name

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
