"""Reading tables: CSV files and pandas ``DataFrame`` objects to a :class:`RawTable`.

Every table pyro_vae reads comes through here: :func:`read_table` (CSV files, text columns
as categories), :func:`read_csv` (a strict numeric CSV) and :func:`as_raw_table` (frames and
arrays). A :class:`RawTable` holds numbers with NaN for missing cells and categories coded
0..K-1; :mod:`pyro_vae.tables` chooses each column's kind from it.
"""

from __future__ import annotations

import csv
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae.arrays import as_tensor, integer_labels
from pyro_vae.errors import DataError

MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "?"})


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


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _describe_columns(names: list[str], header: bool) -> str:
    shown = [f"{i} {n!r}" if header else str(i) for i, n in enumerate(names)]
    if len(shown) > 12:
        shown = [*shown[:10], "...", shown[-1]]
    return f"{len(names)} columns ({', '.join(shown)})"


def _label_index(label_column: str | int, names: list[str], header: bool, path: Path) -> int:
    columns = _describe_columns(names, header)
    if isinstance(label_column, str) and label_column.strip() in names:
        return names.index(label_column.strip())
    try:
        if isinstance(label_column, bool):
            raise TypeError
        idx = int(label_column.strip()) if isinstance(label_column, str) else operator.index(label_column)
    except (TypeError, ValueError):
        where = "" if header else " (it has no header row, so columns go by number)"
        raise DataError(f"label column {label_column!r} is not in {path}{where}: it has {columns}") from None
    if not 0 <= idx < len(names):
        raise DataError(f"label column {idx} is out of range: {path} has {columns}, numbered from 0")
    return idx


def read_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a numeric CSV table (optional header row); returns features, labels, column names.

    ``label_column`` is a header name or a column number from 0. Labels must be whole
    numbers (class numbers) or names; names are numbered 0, 1, ... in sorted order.
    """
    table = read_table(path, label_column)
    if table.levels:
        text = [table.names[j] for j in table.levels]
        raise DataError(
            f"{path}: non-numeric values in column(s) {text}: pyro_vae.tables.read_table and "
            "load_table (and --dataset csv) code them as categories"
        )
    return table.values, table.labels, table.names


def _read_numeric_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The strict reader of whole numbers and decimals (every cell a number)."""
    path = Path(path)
    rows = _csv_rows(path)
    first = rows[0]
    guess = _numbered_column(label_column, len(first))
    has_header = not all(_is_number(c) for i, c in enumerate(first) if i != guess)
    header = [c.strip() for c in first] if has_header else None
    body = rows[1:] if header else rows
    names = header or [f"x{i}" for i in range(len(first))]
    label_idx = None if label_column is None else _label_index(label_column, names, has_header, path)
    if not body:
        raise DataError(f"{path} has no data points (only a header row)")
    if label_idx is not None and len(names) == 1:
        raise DataError(f"{path} has no features: its only column is the label column {names[0]!r}")
    start = 2 if header else 1
    table, label_cells = _csv_body(path, body, len(names), label_idx, start)
    keep = [names[i] for i in range(len(names)) if i != label_idx]
    if label_idx is None:
        return table, None, keep
    label_name = names[label_idx] if header else str(label_idx)
    return table, _csv_labels(path, label_cells, label_name, start), keep


def _csv_rows(path: Path) -> list[list[str]]:
    """The non-blank rows of the CSV file at ``path`` (at least one)."""
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} is empty")
    return rows


def _numbered_column(label_column: str | int | None, num_columns: int) -> int | None:
    """The label column when given by number: it may hold names, even in the first data row."""
    if isinstance(label_column, (int, str)) and not isinstance(label_column, bool):
        text = str(label_column).strip()
        if text.isdigit() and int(text) < num_columns:
            return int(text)
    return None


def _csv_body(
    path: Path, body: list[list[str]], num_columns: int, label_idx: int | None, start: int
) -> tuple[np.ndarray, list[str]]:
    """The feature table and the label cells (stripped) of the data rows, numbered from ``start``."""
    values, label_cells = [], []
    for lineno, row in enumerate(body, start=start):
        if len(row) != num_columns:
            raise DataError(f"{path}:{lineno}: expected {num_columns} columns, found {len(row)}")
        cells = [c for i, c in enumerate(row) if i != label_idx]
        try:
            values.append([float(c) for c in cells])
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric value in {row}") from None
        if label_idx is not None:
            label_cells.append(row[label_idx].strip())
    return np.asarray(values, dtype=np.float64), label_cells


def _csv_labels(path: Path, label_cells: list[str], label_name: str, start: int) -> np.ndarray:
    """Class numbers from whole numbers, or from names numbered in sorted order."""
    if all(_is_number(c) for c in label_cells):
        numbers = np.asarray([float(c) for c in label_cells])
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}:{start + i}: label {label_cells[i]!r} (column {label_name!r}) is not a whole "
                f"number; labels must be class numbers or class names ({int(bad.sum())} are not)"
            )
        return numbers.astype(np.int64)
    if "" in label_cells:
        i = label_cells.index("")
        raise DataError(f"{path}:{start + i}: missing label in column {label_name!r}")
    return integer_labels(np.asarray(label_cells))


__all__ = ["RawTable", "read_table", "read_csv", "as_raw_table", "MISSING_TOKENS"]
