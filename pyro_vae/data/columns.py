"""Column kinds of a table: each kind one small registered class.

A kind detects itself from a column's values (:meth:`ColumnKind.detect`), gives its default
likelihood from the column's training statistics (:meth:`ColumnKind.likelihood`), maps the
column to model units and back (:meth:`ColumnKind.to_model`, :meth:`ColumnKind.to_raw`) and
says in which units the model sees it (:meth:`ColumnKind.units`). :func:`detect` tries the
registered kinds in the order of their ``priority`` (lowest first): the order is data, so a
new kind is one class registered with ``@register(name)`` and a priority, and one test.

=============  ========  ===========================================  =================================
kind           priority  the observed values                          likelihood ("auto")
=============  ========  ===========================================  =================================
categorical    0 / 30    text labels (or declared); or at most 12     ``categorical`` (K levels)
                         distinct numbers, each seen 5 times on
                         average (a coded scale such as 1..7)
binary         10        0 and 1                                      ``bernoulli``
count          20        non-negative integers from 0                 ``negative_binomial``
integer        40        other integers (an age, a cholesterol)       ``discretized_gaussian``
unit           50        inside [0, 1], spread (sd >= 0.1)            ``beta`` / ``continuous_bernoulli``
point_masses   60        a few values stand out (each >= 5% of the    ``point_masses`` (those atoms and
                         rows, twice the next one), >= 10% off them   a Gaussian, in the data's units)
real           100       anything else                                ``gaussian`` (standardized)
=============  ========  ===========================================  =================================

Statistics are float64. Numbers at or beyond 2**53 are not "integers": above it every
float64 is a whole number, so such a column is real.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from pyro_vae.errors import DataError
from pyro_vae.registry import Registry, UnregisteredName

MAX_LEVELS = 12  # numeric columns with this few distinct values are levels (a category each)
ROWS_PER_LEVEL = 5  # ... when each level is seen this often on average
#: a [0, 1] column spread less than this is modelled as real: a continuous Bernoulli cannot
#: peak, and a Beta needs concentrations in the hundreds to fit a column that lives in 0.05-0.15
UNIT_MIN_SD = 0.1
TAIL_SDS = 30.0  # a standardized value beyond this many sds is worth a warning
#: above this every float64 is a whole number: "integer" says nothing about such a column
EXACT_INTEGERS = 2.0**53
#: the most frequent values of a non-integer column are atoms (point masses) when each holds
#: this share of its rows ...
ATOM_SHARE = 0.05
#: ... and the least of them this many times the share of the next value: a measurement rounded
#: to a grid (iris' 0.1 cm) has many values of similar shares, and no value stands out
STANDOUT = 2.0
MAX_ATOMS = 6  # the most frequent ones, at most
OFF_ATOMS = 0.1  # ... and at least this share (and 10 rows) lies off them, for the density


@dataclass
class ColumnSpec:
    """What was chosen for one column, and why (training-split statistics)."""

    name: str
    kind: str
    likelihood: Any
    reason: str
    mean: float | None = None
    std: float | None = None
    standardize: bool = False
    levels: list[str] | None = None
    values: list[float] | None = None  # the numbers a numeric categorical column's codes stand for
    max: float | None = None
    missing: int = 0
    warning: str | None = None

    @property
    def likelihood_name(self) -> str:
        """The registered name of the column's likelihood."""
        return self.likelihood if isinstance(self.likelihood, str) else self.likelihood["name"]

    @property
    def column_kind(self) -> ColumnKind:
        """The registered :class:`ColumnKind` named by :attr:`kind`."""
        return create(self.kind)

    def describe(self) -> str:
        """One line: the name, kind, units, likelihood, why, and the missing cells."""
        missing = f", {self.missing} missing in train" if self.missing else ""
        units = self.column_kind.units(self)
        return f"{self.name!r}: {self.kind}, {units}, {self.likelihood_name} ({self.reason}){missing}"


@dataclass
class ColumnStats:
    """One column's observed values: ``values`` (the training split's, float64, NaN dropped),
    ``support`` (every split's, which decides the kind), ``labels`` (text levels, when the
    column was read as text or declared categorical; ``values`` are then codes)."""

    name: str
    values: np.ndarray
    support: np.ndarray
    missing: int = 0
    labels: list[str] | None = None

    @classmethod
    def of(
        cls, train: np.ndarray, name: str, labels: list[str] | None = None, support: np.ndarray | None = None
    ) -> ColumnStats:
        """The statistics of a training column (NaN: missing) and optionally of the whole column."""
        train = np.asarray(train, dtype=np.float64)
        whole = train if support is None else np.asarray(support, dtype=np.float64)
        return cls(name, train[~np.isnan(train)], whole[~np.isnan(whole)], int(np.isnan(train).sum()), labels)

    @cached_property
    def distinct(self) -> np.ndarray:
        """The sorted distinct values of the support."""
        return np.unique(self.support)

    @cached_property
    def integers(self) -> bool:
        """Whether every value is a whole number that float64 holds exactly."""
        s = self.support
        return bool(np.all(s == np.round(s)) and np.abs(s).max() < EXACT_INTEGERS)

    @cached_property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @cached_property
    def std(self) -> float:
        """The training split's sample standard deviation (float64; values scaled first when
        their squares would overflow or underflow, near 1e200 or 1e-200)."""
        scale = float(np.abs(self.values).max())
        if 1e-150 < scale < 1e150 or scale == 0:
            return float(np.std(self.values, ddof=1))
        return float(np.std(self.values / scale, ddof=1) * scale)

    def in_unit_interval(self) -> bool:
        return bool(self.support.min() >= 0 and self.support.max() <= 1)


class ColumnKind:
    """Base class of column kinds. Subclasses set ``priority`` and implement :meth:`detect`
    and :meth:`likelihood`; the transform is the identity unless the column is standardized.

    Attributes:
        priority: detection order, lowest first (:func:`detect`).
        takes_labels: whether a text (or declared categorical) column can be of this kind.
        encoder_scaled: whether the encoder sees the column standardized although the
            likelihood sees it in its own units (counts, integers).
        standardizable: whether a location-scale likelihood given for the column standardizes it.
        integral: whether the column's raw values are whole numbers (binary, counts, integers).
    """

    name = UnregisteredName()
    priority: ClassVar[float] = 100.0
    takes_labels: ClassVar[bool] = False
    encoder_scaled: ClassVar[bool] = False
    standardizable: ClassVar[bool] = False
    integral: ClassVar[bool] = False

    def detect(self, stats: ColumnStats) -> str | None:
        """Why the column is of this kind (the reason shown to the user), or None."""
        raise NotImplementedError

    def likelihood(self, stats: ColumnStats) -> Any:
        """The default likelihood spec for the column."""
        raise NotImplementedError

    def spec(self, stats: ColumnStats, reason: str, standardize: bool = True) -> ColumnSpec:
        """The :class:`ColumnSpec` of a column detected as this kind."""
        return ColumnSpec(
            stats.name,
            self.name,
            self.likelihood(stats),
            reason,
            mean=stats.mean,
            std=stats.std,
            max=float(stats.values.max()),
            missing=stats.missing,
        )

    def to_model(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        """Raw values (text codes for labelled columns; NaN missing) to model units, float64."""
        column = np.asarray(column, dtype=np.float64)
        return (column - spec.mean) / spec.std if spec.standardize else column

    def to_raw(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        """Model units back to the column's own units (the inverse of :meth:`to_model`)."""
        column = np.asarray(column, dtype=np.float64)
        return column * spec.std + spec.mean if spec.standardize else column

    def units(self, spec: ColumnSpec) -> str:
        """How the model sees the column, for reports."""
        if spec.standardize:
            return f"standardized (mean {spec.mean:.4g}, sd {spec.std:.4g})"
        return "kept as is"

    def num_codes(self, spec: ColumnSpec) -> int | None:
        """How many values a discrete column takes in model units (codes 0..K-1), else None."""
        return None

    def snap(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        """Model-unit values (a mean, a draw) onto the values the column takes there: a
        discrete column's codes rounded and clipped; NaN stays NaN."""
        return np.asarray(column, dtype=np.float64)

    def to_support(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        """Raw values onto the column's support in its own type: whole numbers rounded, bounds clipped."""
        column = np.asarray(column, dtype=np.float64)
        return np.round(column) if self.integral else column

    def in_support(self, value: float, spec: ColumnSpec) -> bool:
        """Whether a raw value (a code, for text levels) is one the column can take."""
        return not self.integral or value == round(value)


REGISTRY: Registry[ColumnKind] = Registry("column kind", ColumnKind)
register = REGISTRY.register
names = REGISTRY.names


def create(spec: Any) -> ColumnKind:
    """The column kind registered under ``spec`` (a name), or ``spec`` if it is a kind."""
    return REGISTRY.create(spec)


def by_priority() -> list[ColumnKind]:
    """Every registered kind, in detection order."""
    return sorted((create(n) for n in names()), key=lambda k: (k.priority, k.name))


def detect(stats: ColumnStats, standardize: bool = True) -> ColumnSpec:
    """The :class:`ColumnSpec` of the first kind (by priority) that detects itself in ``stats``."""
    for kind in by_priority():
        if stats.labels is not None and not kind.takes_labels:
            continue
        reason = kind.detect(stats)
        if reason is not None:
            return kind.spec(stats, reason, standardize)
    raise DataError(f"column {stats.name!r}: no column kind fits its values (kinds: {', '.join(names())})")


# --------------------------------------------------------------------------- the kinds


@register("binary")
class Binary(ColumnKind):
    """Values 0 and 1."""

    priority = 10.0
    integral = True

    def detect(self, stats: ColumnStats) -> str | None:
        return "values 0 and 1" if np.array_equal(stats.distinct, [0.0, 1.0]) else None

    def likelihood(self, stats: ColumnStats) -> Any:
        return "bernoulli"

    def num_codes(self, spec: ColumnSpec) -> int | None:
        return 2

    def snap(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        column = np.asarray(column, dtype=np.float64)
        return np.where(np.isnan(column), np.nan, column >= 0.5)

    def in_support(self, value: float, spec: ColumnSpec) -> bool:
        return value in (0.0, 1.0)


@register("count")
class Count(ColumnKind):
    """Non-negative integers from 0: a negative binomial, in the column's own units."""

    priority = 20.0
    encoder_scaled = True
    standardizable = True
    integral = True

    def detect(self, stats: ColumnStats) -> str | None:
        if stats.integers and stats.support.min() == 0:
            return f"counts: integers from 0 to {stats.support.max():g}"
        return None

    def likelihood(self, stats: ColumnStats) -> Any:
        return "negative_binomial"

    def to_support(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        return np.maximum(super().to_support(column, spec), 0.0)

    def in_support(self, value: float, spec: ColumnSpec) -> bool:
        return value >= 0 and super().in_support(value, spec)


@register("categorical")
class Categorical(ColumnKind):
    """Text labels (coded 0..K-1 when read), or a few distinct numbers, each a level.

    A numeric column's codes stand for its ``values``; :meth:`to_raw` maps a fractional code
    (an imputed mean) back by interpolating between the levels' numbers.
    """

    priority = 30.0
    takes_labels = True

    def detect(self, stats: ColumnStats) -> str | None:
        if stats.labels is not None:
            return f"{len(stats.labels)} labels"
        k = stats.distinct.size
        if k <= min(MAX_LEVELS, stats.values.size / ROWS_PER_LEVEL):
            return f"{k} distinct values: one level each"
        return None

    def likelihood(self, stats: ColumnStats) -> Any:
        if stats.labels is not None:
            return {"name": "categorical", "options": {"num_categories": len(stats.labels)}}
        values = stats.distinct.tolist()
        return {"name": "categorical", "options": {"num_categories": len(values), "values": values}}

    def spec(self, stats: ColumnStats, reason: str, standardize: bool = True) -> ColumnSpec:
        if stats.labels is not None:  # codes: their mean and sd mean nothing
            return ColumnSpec(
                stats.name,
                self.name,
                self.likelihood(stats),
                reason,
                levels=list(stats.labels),
                max=float(stats.values.max()),
                missing=stats.missing,
            )
        spec = super().spec(stats, reason, standardize)
        spec.values = stats.distinct.tolist()
        spec.levels = [f"{x:g}" for x in stats.distinct]
        return spec

    def to_model(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        column = np.asarray(column, dtype=np.float64)
        if spec.values is None:
            return column
        values = np.asarray(spec.values)
        idx = np.clip(np.searchsorted(values, column), 0, len(values) - 1)
        known = np.isnan(column) | (values[idx] == column)
        if not known.all():
            raise DataError(
                f"column {spec.name!r} holds {column[~known][0]:g}, which is not one of its levels "
                f"({', '.join(spec.levels or [])})"
            )
        return np.where(np.isnan(column), np.nan, idx)

    def to_raw(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        column = np.asarray(column, dtype=np.float64)
        if spec.values is None:
            return column
        decoded = np.interp(column, np.arange(len(spec.values)), spec.values)
        return np.where(np.isnan(column), np.nan, decoded)

    def units(self, spec: ColumnSpec) -> str:
        levels = spec.levels or []
        shown = ", ".join(levels[:5]) + (", ..." if len(levels) > 5 else "")
        return f"coded 0..{len(levels) - 1} ({shown})"

    def num_codes(self, spec: ColumnSpec) -> int | None:
        return len(spec.levels or [0, 0])

    def snap(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        return np.clip(np.round(np.asarray(column, dtype=np.float64)), 0, self.num_codes(spec) - 1)


@register("integer")
class Integer(ColumnKind):
    """Integers not from 0 (an age, a cholesterol level): a Gaussian rounded to the integers,
    which, unlike a negative binomial, can be narrower than a Poisson and has no origin."""

    priority = 40.0
    encoder_scaled = True
    standardizable = True
    integral = True

    def detect(self, stats: ColumnStats) -> str | None:
        if stats.integers:
            s = stats.support
            return f"integers from {s.min():g} to {s.max():g}: a measurement on an integer scale"
        return None

    def likelihood(self, stats: ColumnStats) -> Any:
        return {
            "name": "discretized_gaussian",
            "options": {"center": stats.mean, "spread": max(stats.std, 1e-3)},
        }


@register("unit")
class Unit(ColumnKind):
    """Values in [0, 1] spread over it: a Beta strictly inside, else a continuous Bernoulli."""

    priority = 50.0

    def detect(self, stats: ColumnStats) -> str | None:
        if not stats.in_unit_interval() or stats.std < UNIT_MIN_SD:
            return None
        return "values inside (0, 1)" if self._inside(stats) else "values in [0, 1]"

    def likelihood(self, stats: ColumnStats) -> Any:
        return "beta" if self._inside(stats) else "continuous_bernoulli"

    def to_support(self, column: np.ndarray, spec: ColumnSpec) -> np.ndarray:
        # a Beta's support is the open interval: the nearest floats inside it
        lo, hi = (
            (np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0)) if spec.likelihood_name == "beta" else (0, 1)
        )
        return np.clip(np.asarray(column, dtype=np.float64), lo, hi)

    def in_support(self, value: float, spec: ColumnSpec) -> bool:
        return 0.0 < value < 1.0 if spec.likelihood_name == "beta" else 0.0 <= value <= 1.0

    @staticmethod
    def _inside(stats: ColumnStats) -> bool:
        return bool(stats.support.min() > 0 and stats.support.max() < 1)


@register("point_masses")
class PointMasses(ColumnKind):
    """A real column where a few values stand out (diabetes' ``s4``, a ratio of small integers;
    zero-inflated amounts; a clipped sensor, Boston's ``age`` at 100): those atoms, each a
    probability, and a Gaussian density for the rest, in the column's own units (no Jacobian)."""

    priority = 60.0
    encoder_scaled = True
    standardizable = True

    def detect(self, stats: ColumnStats) -> str | None:
        atoms, share = _atoms(stats.support)
        if atoms.size == 0:
            return None
        shown = ", ".join(f"{a:g}" for a in atoms)
        return f"{share:.0%} of the values on {atoms.size} of them ({shown}): point masses and a density"

    def likelihood(self, stats: ColumnStats) -> Any:
        atoms, _ = _atoms(stats.support)
        rest = stats.values[~np.isin(stats.values, atoms)]
        rest = rest if rest.size > 1 else stats.values  # the training split may miss what the support has
        return {
            "name": "point_masses",
            "options": {
                "atoms": atoms.tolist(),
                "center": float(rest.mean()),
                "spread": max(float(rest.std(ddof=1)), 1e-3),
            },
        }


def _atoms(support: np.ndarray) -> tuple[np.ndarray, float]:
    """The atoms of a non-integer column (sorted; empty when it has none) and their share of it:
    the largest number k <= MAX_ATOMS of most frequent values, each holding ATOM_SHARE of the
    rows, whose least share is STANDOUT times the next value's."""
    none = np.empty(0), 0.0
    if support.size == 0 or np.all(support == np.round(support)):
        return none
    values, counts = np.unique(support, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    share = np.append(counts[order] / support.size, 0.0)  # the "next value" of the last one: none
    most = min(MAX_ATOMS, values.size)
    fits = [k for k in range(1, most + 1) if share[k - 1] >= max(ATOM_SHARE, STANDOUT * share[k])]
    if not fits:
        return none
    k = fits[-1]
    if support.size * (1 - share[:k].sum()) < max(10, OFF_ATOMS * support.size):
        return none
    return np.sort(values[order[:k]]), float(share[:k].sum())


@register("real")
class Real(ColumnKind):
    """Anything else: standardized with the training split's mean and sd, a Gaussian."""

    priority = 100.0
    standardizable = True

    def detect(self, stats: ColumnStats) -> str | None:
        if stats.in_unit_interval():
            return f"values in [0, 1] but spread over a narrow range (sd {stats.std:.2g}): real"
        return "real values"

    def likelihood(self, stats: ColumnStats) -> Any:
        return "gaussian"

    def spec(self, stats: ColumnStats, reason: str, standardize: bool = True) -> ColumnSpec:
        spec = super().spec(stats, reason, standardize)
        spec.standardize = standardize
        spec.warning = _scale_warning(stats, standardize)
        return spec


def _scale_warning(stats: ColumnStats, standardize: bool) -> str | None:
    if not standardize and not 1e-2 <= stats.std <= 1e2:
        return (
            f"sd {stats.std:.3g} on its raw scale: networks train badly on scales far from 1 (log p(x) "
            "falls far below what the model can reach); keep standardize on (the default)"
        )
    far = float(np.abs(stats.values - stats.mean).max() / stats.std)
    if far > TAIL_SDS:
        return f"values up to {far:.0f} sd from the mean: heavy tails, consider 'student_t' for it"
    return None


__all__ = [
    "ColumnKind",
    "ColumnSpec",
    "ColumnStats",
    "REGISTRY",
    "register",
    "names",
    "create",
    "detect",
    "by_priority",
    "MAX_LEVELS",
]
