"""Tables: each column's kind, preprocessing and likelihood chosen from the training split.

:func:`load_table` (a numpy array, a pandas ``DataFrame`` or :func:`read_table`'s CSV) and
``pyro-vae train --dataset csv`` infer a :class:`TableSchema` from the training split. Each
kind is a registered class of :mod:`pyro_vae.columns`, which detects itself from the column's
values (in the order of the kinds' priorities) and says its transform and default likelihood:

=============  ===========================================  =====================  ======================
kind           the observed values                          transform              likelihood ("auto")
=============  ===========================================  =====================  ======================
binary         0 and 1                                      kept                   ``bernoulli``
count          non-negative integers from 0                 kept                   ``negative_binomial``
categorical    text labels (or declared), or at most 12     coded 0..K-1           ``categorical`` (K levels)
               distinct numbers (each seen 5 times on
               average; a coded scale such as 1..7)
integer        other integers (an age, a cholesterol)       kept                   ``discretized_gaussian``
unit           inside [0, 1] (Beta when strictly inside)    kept                   ``beta`` / ``continuous_bernoulli``
real           anything else                                standardized           ``gaussian`` with sigma(z)
=============  ===========================================  =====================  ======================

Counts and integers stay in their own units (their likelihoods give probabilities, which
need no Jacobian); the encoder sees every column standardized all the same
(:class:`~pyro_vae.networks.ScaledInput`, set by :func:`pyro_vae.fit`). A rounded Gaussian
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae import columns as column_kinds
from pyro_vae.columns import MAX_LEVELS, ColumnSpec
from pyro_vae.data import (
    DataSplits,
    Preprocessing,
    _csv_labels,
    _csv_rows,
    _is_number,
    _label_index,
    _labels,
    _numbered_column,
    _split_indices,
    as_tensor,
    integer_labels,
)
from pyro_vae.errors import ConfigError, DataError

MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "?"})
#: Likelihoods of location-scale families: a real column is standardized for them.
LOCATION_SCALE = frozenset(
    {"gaussian", "gaussian_shared", "gaussian_fixed", "gaussian_optimal", "laplace", "student_t"}
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
        from pyro_vae import likelihoods

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
        if str(key) in [d["name"] for d in self.dropped]:
            raise ConfigError(
                f"column {key!r} was dropped ({self.dropped[0]['reason']}); it has no likelihood"
            )
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

    The statistics come from the training split; the kind (:mod:`pyro_vae.columns`) from
    ``support``, every observed value of the column when given: a count column whose
    validation split holds 42.5 is real, whatever the training split shows.
    """
    stats = column_kinds.ColumnStats.of(values, name, levels, support)
    if stats.values.size == 0:
        return "no observed value in the training split"
    unique = np.unique(stats.values)
    if unique.size < 2:
        return f"constant ({levels[int(unique[0])] if levels else f'{unique[0]:g}'}) in the training split"
    return column_kinds.detect(stats, standardize)


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


# --------------------------------------------------------------------------- raw tables


@dataclass
class RawTable:
    """A table as read: numbers with NaN for missing cells, categories coded 0..K-1."""

    values: np.ndarray
    names: list[str]
    levels: dict[int, list[str]] = field(default_factory=dict)
    labels: np.ndarray | None = None


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def _column(cells: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """One column's values (NaN where missing) and, for text, its sorted levels (codes)."""
    present = [c.strip() for c in cells if not _is_missing(c)]
    if all(_is_number(c) for c in present):
        return np.array([np.nan if _is_missing(c) else float(c) for c in cells]), None
    levels = sorted(set(present))
    code = {v: i for i, v in enumerate(levels)}
    return np.array([np.nan if _is_missing(c) else code[c.strip()] for c in cells], dtype=np.float64), levels


def _has_header(first: list[str], rest: list[list[str]], skip: int | None) -> bool:
    cells = [(i, c) for i, c in enumerate(first) if i != skip]
    if all(_is_number(c) or _is_missing(c) for _, c in cells):
        return False
    below = rest[:50]
    return all(not _is_number(c) for _, c in cells) or any(
        not _is_number(c) and all(_is_number(r[i]) or _is_missing(r[i]) for r in below if i < len(r))
        for i, c in cells
    )


def read_table(path: str | Path, label_column: str | int | None = None) -> RawTable:
    """Read a CSV table with an optional header: empty, ``NA``, ``NaN`` or ``?`` cells are
    missing, text columns become categories coded 0..K-1 in sorted order."""
    path = Path(path)
    rows = _csv_rows(path)
    guess = _numbered_column(label_column, len(rows[0]))
    header = _has_header(rows[0], rows[1:], guess)
    names = [c.strip() for c in rows[0]] if header else [f"x{i}" for i in range(len(rows[0]))]
    body, start = (rows[1:], 2) if header else (rows, 1)
    label_idx = None if label_column is None else _label_index(label_column, names, header, path)
    if not body:
        raise DataError(f"{path} has no data points (only a header row)")
    if label_idx is not None and len(names) == 1:
        raise DataError(f"{path} has no features: its only column is the label column {names[0]!r}")
    for lineno, row in enumerate(body, start=start):
        if len(row) != len(names):
            raise DataError(f"{path}:{lineno}: expected {len(names)} columns, found {len(row)}")
    features = [i for i in range(len(names)) if i != label_idx]
    columns = [_column([r[i] for r in body]) for i in features]
    values = np.column_stack([v for v, _ in columns])
    levels = {j: lv for j, (_, lv) in enumerate(columns) if lv is not None}
    labels = None
    if label_idx is not None:
        label_name = names[label_idx] if header else str(label_idx)
        labels = _csv_labels(path, [r[label_idx].strip() for r in body], label_name, start)
    return RawTable(values, [names[i] for i in features], levels, labels)


def _from_frame(frame: Any, categorical: set) -> RawTable:
    """A pandas ``DataFrame``: text, category and boolean columns coded, numbers as they are."""
    values, levels = [], {}
    for j, name in enumerate(frame.columns):
        col = frame[name]
        numeric = col.dtype.kind in "biuf" and str(name) not in categorical and j not in categorical
        if numeric:
            values.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            continue
        cells = col.astype(object).where(col.notna(), None).tolist()
        present = sorted({str(c) for c in cells if c is not None})
        code = {v: i for i, v in enumerate(present)}
        values.append(np.array([np.nan if c is None else code[str(c)] for c in cells], dtype=np.float64))
        levels[j] = present
    return RawTable(np.column_stack(values), [str(n) for n in frame.columns], levels)


def as_raw_table(table: Any, names: list[str] | None = None, categorical=()) -> RawTable:
    """A :class:`RawTable` from a ``RawTable``, a pandas ``DataFrame`` or an array ``(n, D)``."""
    categorical = set(categorical or ())
    if isinstance(table, RawTable):
        return table
    if hasattr(table, "columns") and hasattr(table, "dtypes"):
        return _from_frame(table, categorical)
    values = np.asarray(as_tensor(table, dtype=torch.float64))
    if values.ndim != 2:
        raise DataError(f"a table must be 2-D (rows, columns), got shape {values.shape}")
    names = list(names) if names is not None else [f"x{i}" for i in range(values.shape[1])]
    levels = {}
    for j, name in enumerate(names):
        if name in categorical or j in categorical:
            present = np.unique(values[~np.isnan(values[:, j]), j])
            levels[j] = [f"{v:g}" for v in present]
            values[:, j] = np.where(np.isnan(values[:, j]), np.nan, np.searchsorted(present, values[:, j]))
    return RawTable(values, names, levels)


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
    if np.isinf(values).any():
        raise DataError(
            f"{name} holds {int(np.isinf(values).sum())} infinite values; remove them (NaN marks a missing cell)"
        )
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
