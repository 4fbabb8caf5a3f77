"""Tables: each column's kind, preprocessing and likelihood chosen from the training split.

:func:`load_table` (a numpy array, a pandas ``DataFrame`` or :func:`read_table`'s CSV) and
``pyro-vae train --dataset csv`` infer a :class:`TableSchema` from the training split. Each
kind is a registered class of :mod:`pyro_vae.data.columns`, which detects itself from the column's
values (in the order of the kinds' priorities) and says its transform and default likelihood;
that module's docstring holds the table of kinds. Columns that are identifiers (every value
a distinct key, or consecutive integers such as R's row names, in tables of 20 rows or more)
are dropped saying so, like constant ones. Files and frames are read by :mod:`pyro_vae.data.reading`.

Counts and integers stay in their own units (their likelihoods give probabilities, which
need no Jacobian); the encoder sees every column standardized all the same
(:class:`~pyro_vae.nn.networks.ScaledInput`, set by :func:`pyro_vae.fit`). A rounded Gaussian
suits integers on a scale: unlike a negative binomial it can be narrower than a Poisson of
the same mean and has no preferred origin.

Real columns are standardized with the training split's mean and standard deviation
(``standardize=False`` keeps them raw, with a warning when a scale is far from 1); the
Jacobian :math:`-\\sum_d \\log s_d` over a row's observed real cells is added by
:func:`pyro_vae.evaluate`, so log p(x) is also reported in the data's own units. A column
that is constant in the training split is dropped with a warning (it has no density to
learn). NaN cells (and empty, ``NA``, ``?`` CSV cells) are missing; infinite values are an
error. A mapping ``{column name or index: likelihood}`` overrides the choice per column.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pyro_vae.data import columns as column_kinds
from pyro_vae.data.arrays import DataSplits, Preprocessing, _labels, _split_indices, as_tensor, integer_labels
from pyro_vae.data.columns import MAX_LEVELS, ColumnSpec
from pyro_vae.data.reading import MISSING_TOKENS, RawTable, as_raw_table, read_table  # noqa: F401
from pyro_vae.errors import ConfigError, DataError

#: a column of this many rows or more whose values are all distinct keys is an identifier
MIN_KEY_ROWS = 20
#: a name that says "identifier" (id, patient_id, PatientID, key, index, rownames, "Unnamed: 0")
ID_NAME = re.compile(
    r"(^|[_\W])(id|key|index|idx|rownames?)$|(?-i:[a-z]I[Dd])$|^unnamed: \d+$", re.IGNORECASE
)
#: Likelihoods of location-scale families: a real column is standardized for them.
LOCATION_SCALE = frozenset(
    {
        "gaussian",
        "gaussian_shared",
        "gaussian_fixed",
        "gaussian_optimal",
        "gaussian_lowrank",
        "laplace",
        "student_t",
    }
)


@dataclass
class TableSchema:
    """The columns kept (in order), those dropped and why, and the raw table's column names."""

    columns: list[ColumnSpec]
    dropped: list[dict[str, str]] = field(default_factory=list)
    source_names: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def keep(self) -> list[int]:
        return [self.source_names.index(n) for n in self.names]

    @property
    def warnings(self) -> list[str]:
        out = [f"column {d['name']!r} dropped: {d['reason']}" for d in self.dropped]
        return out + [f"column {c.name!r}: {c.warning}" for c in self.columns if c.warning]

    def preprocessing(self) -> Preprocessing:
        if not any(c.standardize for c in self.columns):
            return Preprocessing()
        mean = [c.mean if c.standardize else 0.0 for c in self.columns]
        std = [c.std if c.standardize else 1.0 for c in self.columns]
        return Preprocessing(mean=mean, std=std)

    def likelihood_spec(self) -> Any:
        """One likelihood when every column has the same, else a ``"columns"`` spec with the names."""
        specs = [c.likelihood for c in self.columns]
        if all(s == specs[0] for s in specs):
            return specs[0]
        return {"name": "columns", "options": {"columns": specs, "names": self.names}}

    def with_likelihoods(self, mapping: dict[Any, Any]) -> TableSchema:
        """A copy with the likelihoods of ``mapping`` (column name or index -> likelihood)."""
        from pyro_vae.distributions import likelihoods

        columns = [dataclasses.replace(c) for c in self.columns]
        for key, spec in mapping.items():
            c = columns[self._index(key)]
            if spec in ("categorical", {"name": "categorical"}):
                k = len(c.levels) if c.levels else int(c.max or 0) + 1
                spec = {"name": "categorical", "options": {"num_categories": max(k, 2)}}
            try:
                likelihoods.create(spec)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"column {c.name!r}: {e}") from None
            if spec in ("discretized_gaussian", {"name": "discretized_gaussian"}) and c.std is not None:
                spec = {
                    "name": "discretized_gaussian",
                    "options": {"center": c.mean, "spread": max(c.std, 1e-3)},
                }
            c.likelihood, c.reason = spec, "given"
            scalable = c.column_kind.standardizable and c.std is not None
            c.standardize = scalable and c.likelihood_name in LOCATION_SCALE
        return dataclasses.replace(self, columns=columns)

    def _index(self, key: Any) -> int:
        names = self.names
        if str(key) in names:
            return names.index(str(key))
        reasons = {d["name"]: d["reason"] for d in self.dropped}
        if str(key) in reasons:
            raise ConfigError(f"column {key!r} was dropped ({reasons[str(key)]}); it has no likelihood")
        if str(key).isdigit() and int(key) < len(names):
            return int(key)
        raise ConfigError(
            f"column {key!r} is not in the table; its columns are {names} (or 0..{len(names) - 1})"
        )

    @property
    def encoder_scaled(self) -> list[bool]:
        """Per column: whether the encoder should see it standardized although the model
        keeps it in its own units (its kind says: counts and integers do)."""
        return [c.column_kind.encoder_scaled for c in self.columns]

    def transform(self, raw: np.ndarray) -> torch.Tensor:
        """Raw rows ``(n, len(source_names))`` (text categories coded) to model units ``(n, D)``:
        each column by its kind (numeric levels coded, real columns standardized), float32."""
        x = np.asarray(raw, dtype=np.float64)[:, self.keep]
        out = np.column_stack([c.column_kind.to_model(x[:, j], c) for j, c in enumerate(self.columns)])
        return as_tensor(out.reshape(len(x), len(self.columns)))

    def coded(self, raw: np.ndarray) -> np.ndarray:
        """The kept columns of raw rows with numeric levels coded 0..K-1, nothing standardized."""
        x = np.asarray(raw, dtype=np.float64)[:, self.keep]
        raw_units = [dataclasses.replace(c, standardize=False) for c in self.columns]
        out = [c.column_kind.to_model(x[:, j], c) for j, c in enumerate(raw_units)]
        return np.column_stack(out).reshape(x.shape)

    def to_raw(self, x: torch.Tensor) -> np.ndarray:
        """Model units ``(n, D)`` back to the columns' own units (numeric levels decoded; a
        fractional code, an imputed mean, interpolates between the levels' numbers)."""
        y = torch.as_tensor(x).detach().cpu().double().numpy().reshape(len(x), len(self.columns))
        out = [c.column_kind.to_raw(y[:, j], c) for j, c in enumerate(self.columns)]
        return np.column_stack(out).reshape(y.shape)

    def summary_lines(self) -> list[str]:
        lines = [f"column  {c.describe()}" for c in self.columns]
        return lines + [f"warning {w}" for w in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "dropped": self.dropped,
            "source_names": self.source_names,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSchema:
        return cls(
            [ColumnSpec(**c) for c in d["columns"]], list(d.get("dropped", [])), list(d["source_names"])
        )


# --------------------------------------------------------------------------- inference


def infer_column(
    values: np.ndarray,
    name: str,
    levels: list[str] | None,
    standardize: bool = True,
    support: np.ndarray | None = None,
) -> ColumnSpec | str:
    """The :class:`ColumnSpec` of one training column (NaN: missing), or why it is dropped.

    The statistics come from the training split; the kind (:mod:`pyro_vae.data.columns`) from
    ``support``, every observed value of the column when given: a count column whose
    validation split holds 42.5 is real, whatever the training split shows.
    """
    stats = column_kinds.ColumnStats.of(values, name, levels, support)
    if stats.values.size == 0:
        return "no observed value in the training split"
    unique = np.unique(stats.values)
    if unique.size < 2:
        return f"constant ({levels[int(unique[0])] if levels else f'{unique[0]:g}'}) in the training split"
    return _identifier(stats) or column_kinds.detect(stats, standardize)


def _identifier(stats: column_kinds.ColumnStats) -> str | None:
    """Why a column looks like row identifiers (every value distinct: text keys, or consecutive
    integers such as R's row names), or None. It is no measurement: modelled, it would be a
    category per row, or an "integer" whose density says nothing."""
    n = stats.support.size
    if n < MIN_KEY_ROWS or stats.distinct.size != n:
        return None
    if stats.labels is not None:
        return f"an identifier: {n} distinct labels, one per row"
    lo, hi = stats.distinct[0], stats.distinct[-1]
    if stats.integers and hi - lo == n - 1:
        return f"an identifier: the consecutive integers {lo:g}..{hi:g}, one per row (a row number)"
    if stats.integers and ID_NAME.search(stats.name):
        return f"an identifier: named like one, and its {n} integers are distinct, one per row"
    return None


def infer_schema(
    train: np.ndarray,
    names: list[str],
    levels: dict[int, list[str]] | None = None,
    standardize: bool = True,
    support: np.ndarray | None = None,
) -> TableSchema:
    """The :class:`TableSchema` of a raw training split ``(n, len(names))`` (categories coded);
    ``support``, the whole table, decides each column's kind (see :func:`infer_column`)."""
    levels = levels or {}
    columns, dropped = [], []
    for d, name in enumerate(names):
        column = np.asarray(train[:, d], dtype=np.float64)
        whole = None if support is None else np.asarray(support[:, d], dtype=np.float64)
        spec = infer_column(column, name, levels.get(d), standardize, whole)
        if isinstance(spec, str):
            dropped.append({"name": name, "reason": spec})
        else:
            columns.append(spec)
    if not columns:
        raise DataError(
            f"no column of the table can be modelled: {'; '.join(d['name'] + ' ' + d['reason'] for d in dropped)}"
        )
    schema = TableSchema(columns, dropped, list(names))
    for w in schema.warnings:
        warnings.warn(w, stacklevel=3)
    return schema


def load_table(
    table: Any,
    labels: Any = None,
    *,
    names: list[str] | None = None,
    categorical=(),
    name: str = "table",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    standardize: bool = True,
    column_likelihoods: dict | None = None,
    seed: int = 0,
) -> DataSplits:
    """Split a raw table at random and preprocess each column as its training split says.

    ``table``: a pandas ``DataFrame`` (text and category columns become categories), an
    array ``(n, D)`` with NaN for missing cells, or a :class:`RawTable`; ``categorical``:
    names or indices of number-coded columns to treat as categories;
    ``column_likelihoods``: ``{name or index: likelihood}`` overriding ``"auto"``'s choice.
    The splits carry the :class:`TableSchema` as ``splits.columns`` and the column names as
    ``splits.feature_names``; their likelihood is ``splits.columns.likelihood_spec()``.
    """
    raw = as_raw_table(table, names, categorical)
    labels = raw.labels if labels is None else integer_labels(labels)
    values = raw.values
    _check_values(values, raw.names, name)
    idx = _split_indices(len(values), valid_fraction, test_fraction, seed)
    schema = infer_schema(values[idx[0]], raw.names, raw.levels, standardize, support=values)
    if column_likelihoods:
        schema = schema.with_likelihoods(column_likelihoods)
    train, valid, test = (schema.transform(values[i]) for i in idx)
    return DataSplits(
        name=name,
        train=train,
        valid=valid,
        test=test,
        train_labels=None if labels is None else _labels(labels[idx[0]]),
        valid_labels=None if labels is None else _labels(labels[idx[1]]),
        test_labels=None if labels is None else _labels(labels[idx[2]]),
        preprocessing=schema.preprocessing(),
        feature_names=schema.names,
        columns=schema,
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_values(values: np.ndarray, names: list[str], name: str) -> None:
    """Infinite cells, and numbers the model's float32 cannot hold, are refused before any
    statistic is taken or any file written (naming the column)."""
    if np.isinf(values).any():
        raise DataError(
            f"{name} holds {int(np.isinf(values).sum())} infinite values; remove them (NaN marks a missing cell)"
        )
    top = np.nanmax(np.abs(values), axis=0, initial=0.0)
    if (top > FLOAT32_MAX).any():
        j = int(np.argmax(top))
        raise DataError(
            f"column {names[j]!r} of {name}: values up to {top[j]:.3g} do not fit in float32 (max "
            f"{FLOAT32_MAX:.2g}), in which the model reports them; rescale it (divide by a power of ten)"
        )


def missing_summary(x: Any) -> tuple[int, int]:
    """(missing cells, rows with one) of a tensor or array."""
    nan = np.isnan(np.asarray(x, dtype=np.float64))
    return int(nan.sum()), int(nan.reshape(len(nan), -1).any(1).sum())


__all__ = [
    "ColumnSpec",
    "TableSchema",
    "RawTable",
    "infer_schema",
    "infer_column",
    "read_table",
    "load_table",
    "as_raw_table",
    "missing_summary",
    "MAX_LEVELS",
]
