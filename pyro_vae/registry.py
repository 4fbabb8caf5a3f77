"""Name-to-class registries for the pluggable parts (likelihoods, priors, objectives).

Each choice is one small class registered under a name, so that adding a distribution
is one class and one test. Instances remember their constructor arguments, which makes
every choice serialisable to JSON as ``{"name": ..., "options": {...}}``.

:meth:`Registry.create` accepts exactly three things: a registered name, a spec dict
``{"name": ..., "options": {...}}``, or an instance of the registry's base class (used as
given). Anything else, such as a number, ``None``, a class rather than an instance, or a
likelihood where a prior is expected, is a :class:`~pyro_vae.errors.ConfigError`.

Each of :mod:`pyro_vae.distributions.likelihoods`, :mod:`pyro_vae.distributions.priors` and :mod:`pyro_vae.infer.objectives`
holds one ``REGISTRY`` and exports its bound methods as the module's ``register``,
``create`` and ``names``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from pyro_vae.errors import ConfigError

T = TypeVar("T")
# Kinds whose options the command line takes as --KIND-options JSON.
OPTION_FLAGS = ("likelihood", "prior", "guide")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the choice closest to a mistyped ``name`` (difflib's ratio of
    at least 0.6), or ``""`` when none is close: the one suggestion every message uses."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class UnregisteredName:
    """The ``name`` of a class no registry knows: its class name.

    Base classes hold this descriptor, so an instance of an unregistered subclass (passed
    as an instance) still has a ``name`` for messages, reports and its spec;
    :meth:`Registry.register` replaces it with the registered name.
    """

    def __get__(self, obj: Any, cls: type) -> str:
        return cls.__name__


class Registry(Generic[T]):
    """A mapping from names to subclasses of ``base`` (``kind`` is used in messages)."""

    def __init__(self, kind: str, base: type[T] = object) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str):
        """Class decorator: make ``cls`` (a subclass of ``base``) available as ``name``."""

        def decorator(cls: type[T]) -> type[T]:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"a {self.kind} must be registered under a non-empty string, got {name!r}")
            if name in self._classes:
                raise ConfigError(
                    f"{self.kind} {name!r} is already registered (by {self._classes[name].__qualname__}); "
                    "choose another name"
                )
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise ConfigError(
                    f"only subclasses of {self.base.__qualname__} can be registered as a {self.kind}, "
                    f"got {cls!r}"
                )
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for example a class registered by a test); its class keeps working."""
        cls = self.get(name)
        del self._classes[name]
        if cls.__dict__.get("name") == name:
            del cls.name  # back to the base class's name (its class name)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if not isinstance(name, str):
            raise ConfigError(f"a {self.kind} name must be a string, got {name!r}")
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._classes)} "
                f"Choose one of: {', '.join(self.names())}."
            ) from None

    def _check_required(self, cls: type, name: str, options: dict[str, Any]) -> None:
        """A missing required option named, with where it goes (not the constructor's TypeError)."""
        sig = inspect.signature(cls.__init__)
        missing = [
            p.name
            for p in sig.parameters.values()
            if p.name != "self"
            and p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.name not in options
        ]
        if missing:
            example = ", ".join(f'"{m}": ...' for m in missing)
            flag = (
                f" (command line: --{self.kind}-options '{{{example}}}')" if self.kind in OPTION_FLAGS else ""
            )
            raise ConfigError(
                f"{self.kind} {name!r} needs the option(s) {', '.join(missing)}: give them as "
                f'{{"name": "{name}", "options": {{{example}}}}}{flag}'
            )

    def _accepted(self) -> str:
        return (
            f"a registered name ({', '.join(self.names())}), a dict {{'name': ..., 'options': {{...}}}} "
            f"or a {self.base.__qualname__} instance"
        )

    def create(self, spec: Any, **options: Any) -> T:
        """Build from a name, a ``{"name", "options"}`` dict, or pass an instance of ``base`` through."""
        if isinstance(spec, dict):
            unknown = set(spec) - {"name", "options"}
            if "name" not in spec or unknown:
                raise ConfigError(
                    f"a {self.kind} given as a dict needs the keys 'name' and optionally "
                    f"'options', got {sorted(spec)}"
                )
            if not isinstance(spec["name"], str):
                raise ConfigError(f"the 'name' of a {self.kind} spec must be a string, got {spec['name']!r}")
            given = spec.get("options", {})
            if not isinstance(given, dict):
                raise ConfigError(
                    f"the 'options' of {self.kind} {spec['name']!r} must be a dict of keyword arguments, "
                    f"got {type(given).__name__} {given!r}"
                )
            return self.create(spec["name"], **{**given, **options})
        if isinstance(spec, str):
            cls = self.get(spec)
            check_options(cls, options, f"{self.kind} {spec!r}")
            self._check_required(cls, spec, options)
            return cls(**options)
        if isinstance(spec, self.base):
            if options:
                raise ConfigError(f"options {sorted(options)} can only be given with a {self.kind} name")
            return spec
        if isinstance(spec, type) and issubclass(spec, self.base):
            raise ConfigError(
                f"a {self.kind} was given as the class {spec.__name__}, not an instance: "
                f"pass {spec.__name__}(...) or {_registered_as(self, spec)}"
            )
        raise ConfigError(f"a {self.kind} must be {self._accepted()}; got {_describe(spec)}")


def _registered_as(registry: Registry, cls: type) -> str:
    names = [n for n, c in registry._classes.items() if c is cls]
    return (
        f"its registered name {names[0]!r}" if names else "register it with register(name) and pass the name"
    )


def _describe(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    cls = type(value)
    return f"a {cls.__module__}.{cls.__qualname__} ({text})"


def check_options(cls: type, options: dict[str, Any], what: str) -> None:
    params = _init_parameters(cls)
    unknown = sorted(set(options) - set(params))
    if unknown:
        allowed = ", ".join(params) or "none"
        raise ConfigError(f"{what} does not take option(s) {unknown}; it takes: {allowed}")


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


class Specified:
    """Mixin of the registered plug-ins (likelihoods, priors, guides): ``spec()`` is the JSON that
    rebuilds the instance (:func:`spec_of`), and the module's repr shows the same options."""

    def spec(self) -> dict[str, Any]:
        return spec_of(self)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.spec()["options"].items())
