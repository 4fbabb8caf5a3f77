"""Name-to-class registries for the pluggable parts (likelihoods, priors, objectives).

Each choice is one small class registered under a name, so that adding a distribution
is one class and one test. Instances remember their constructor arguments, which makes
every choice serialisable to JSON as ``{"name": ..., "options": {...}}``.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to classes of one kind (``kind`` is used in messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str):
        def decorator(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._classes, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}.{hint} Choose one of: {', '.join(self.names())}."
            ) from None

    def create(self, spec: Any, **options: Any) -> T:
        """Build from a name, a ``{"name", "options"}`` dict, or pass an instance through."""
        if isinstance(spec, dict):
            unknown = set(spec) - {"name", "options"}
            if "name" not in spec or unknown:
                raise ValueError(
                    f"a {self.kind} given as a dict needs the keys 'name' and optionally "
                    f"'options', got {sorted(spec)}"
                )
            return self.create(spec["name"], **{**spec.get("options", {}), **options})
        if isinstance(spec, str):
            cls = self.get(spec)
            check_options(cls, options, f"{self.kind} {spec!r}")
            return cls(**options)
        if options:
            raise ValueError(f"options {sorted(options)} can only be given with a {self.kind} name")
        return spec


def check_options(cls: type, options: dict[str, Any], what: str) -> None:
    params = _init_parameters(cls)
    unknown = sorted(set(options) - set(params))
    if unknown:
        allowed = ", ".join(params) or "none"
        raise ValueError(f"{what} does not take option(s) {unknown}; it takes: {allowed}")


def _init_parameters(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def spec_of(obj: Any) -> dict[str, Any]:
    """The JSON spec of a registered instance: its name and constructor arguments.

    Classes store each constructor argument under the same attribute name.
    """
    options = {}
    for name in _init_parameters(type(obj)):
        value = getattr(obj, name)
        if isinstance(value, tuple):
            value = list(value)
        options[name] = value
    return {"name": obj.name, "options": options}
