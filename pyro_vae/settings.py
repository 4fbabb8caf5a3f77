"""Typed settings: each one defined once, with its type, default, help text and check.

A settings class is a dataclass whose fields are made with :func:`setting`. From that one
definition come the validation of Python arguments (:meth:`Settings.replace`, construction),
of JSON (:meth:`Settings.from_dict`: unknown keys and wrong types are errors naming the key
and the expected type), and the command-line flags (``pyro_vae.app.cli`` generates them,
so ``--help`` shows every default). ``"standardize": "false"`` is refused rather than read
as true; ``"batch_size": 64.5`` is refused when the file is read, not at run time.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, Union

from pyro_vae.errors import ConfigError
from pyro_vae.registry import did_you_mean

S = TypeVar("S", bound="Settings")
Check = Callable[[Any], "str | None"]  # returns what is wrong, or None


def setting(
    default: Any,
    help: str,
    *,
    check: Check | None = None,
    choices: Callable[[], Sequence[str]] | Sequence[str] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its help text, an optional value check and CLI flag name.

    ``choices`` may be a callable (a registry's ``names``) so that plug-ins registered
    later are accepted. ``flag`` overrides the generated ``--field-name``.
    """
    metadata = {"help": help, "check": check, "choices": choices, "flag": flag, "metavar": metavar}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: _copy(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return type(value)(value)


# ---------------------------------------------------------------- value checks


def positive(value: Any) -> str | None:
    return None if value is None or (math.isfinite(value) and value > 0) else "must be a positive number"


def at_least(minimum: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None or value >= minimum else f"must be at least {minimum}"

    return check


MAX_SEED = 2**63 - 1  # torch's generators take 64-bit signed seeds


def seed_range(value: Any) -> str | None:
    return (
        None if value is None or 0 <= value <= MAX_SEED else f"must be between 0 and 2**63 - 1 ({MAX_SEED})"
    )


def finite(value: Any) -> str | None:
    return None if value is None or math.isfinite(value) else "must be finite"


def each_positive(value: Sequence[int]) -> str | None:
    return None if all(v >= 1 for v in value) else "widths must be positive integers"


# ---------------------------------------------------------------- types


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        item = type_name(typing.get_args(tp)[0]).removeprefix("an ").removeprefix("a ")
        return f"a list of {item}s"
    if origin is dict or tp is dict:
        return "an object"
    if dataclasses.is_dataclass(tp):
        return f"an object ({', '.join(f.name for f in dataclasses.fields(tp))})"
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        type(None): "null",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp``, or a :class:`ConfigError` naming ``where`` and the type."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                pass
        raise _wrong_type(value, tp, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(value, tp, where)
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _wrong_type(value, tp, where)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return tp.coerce(value, where) if hasattr(tp, "coerce") else _dataclass_from(tp, value, where)
    return _scalar(value, tp, where)


def _scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if not isinstance(value, (bool, float, str)):
            try:
                return operator.index(value)  # ints and numpy integers, not 64.5 or "2"
            except TypeError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "iuf":
            return float(value)  # numpy scalars
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise _wrong_type(value, tp, where)


def _wrong_type(value: Any, tp: Any, where: str) -> ConfigError:
    return ConfigError(f"{where} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")


def _dataclass_from(cls: type[S], value: Any, where: str) -> S:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise _wrong_type(value, cls, where)
    return cls.from_dict(value, where)


# ---------------------------------------------------------------- the base class


class Settings:
    """Mixin for dataclasses of :func:`setting` fields: every value is checked on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            where = self._where(f.name)
            value = coerce(getattr(self, f.name), hints[f.name], where)
            choices = f.metadata.get("choices")
            if choices is not None and value is not None:
                allowed = list(choices() if callable(choices) else choices)
                if value not in allowed:
                    raise ConfigError(
                        f"{where} must be one of {', '.join(map(str, allowed))}; got {value!r}."
                        f"{did_you_mean(str(value), map(str, allowed))}"
                    )
            check = f.metadata.get("check")
            problem = check(value) if check is not None else None
            if problem:
                raise ConfigError(f"{where} {problem}, got {value!r}")
            object.__setattr__(self, f.name, value)

    @classmethod
    def section(cls) -> str:
        return getattr(cls, "SECTION", cls.__name__)

    @classmethod
    def _where(cls, name: str) -> str:
        return f"{cls.section()}.{name}"

    @classmethod
    def from_dict(cls: type[S], d: Any, where: str | None = None) -> S:
        """From JSON data: unknown keys and wrong types are errors that name the key."""
        where = where or cls.section()
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a JSON object, got {d!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown} in {where}; allowed: {', '.join(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied and checked; unknown names are errors."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {unknown} for {self.section()}; allowed: {', '.join(names)}"
            )
        return dataclasses.replace(self, **changes)
