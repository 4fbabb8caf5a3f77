"""Reading tables: CSV files and pandas ``DataFrame`` objects to a :class:`RawTable`.

Every table pyro_vae reads comes through here: :func:`read_table` (CSV files, text columns
as categories), :func:`read_csv` (a strict numeric CSV) and :func:`as_raw_table` (frames and
arrays). A :class:`RawTable` holds numbers with NaN for missing cells and categories coded
0..K-1; :mod:`pyro_vae.data.tables` chooses each column's kind from it.

CSV files as people have them are read right or refused with the file, line and cell named:

- UTF-8 with or without a byte-order mark, or UTF-16 with one; another encoding is an
  error naming the file and the byte (``encoding=`` reads it);
- the delimiter sniffed among ``, ; tab |`` (:class:`csv.Sniffer`), a comma when unsure; in
  a file not delimited by commas, a column of numbers written ``1,5`` is read as 1.5, saying so;
- duplicate column names made unique (``a``, ``a.1``), saying so; each keeps its own data;
- numbers are decimal literals only: ``1_042`` (which Python's ``float`` takes as 1042) or
  ``0x1A`` are text; integers beyond 2**53 are warned about (float64 rounds them);
- a numeric column holding a few text cells is an error naming the line and the cell, with
  the choice of ``text_cells="missing"`` or ``categorical=[column]``;
- ISO dates (``2021-03-04``, with an optional time) become days since 1970-01-01, saying
  so; dates in an ambiguous order (``03/04/2021``) are refused;
- a cell longer than the csv module's limit (an unclosed quote) is an error naming the line.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import difflib
import io
import operator
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae.data.arrays import as_tensor, integer_labels
from pyro_vae.data.columns import EXACT_INTEGERS
from pyro_vae.errors import ConfigError, DataError

MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "?"})
#: a decimal literal: what a CSV cell holds when it is a number (no ``_``, no hex)
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
INTEGER = re.compile(r"[+-]?\d+")
#: a number written with a decimal comma (``1,5``), as files delimited by ``;`` often are
DECIMAL_COMMA = re.compile(r"[+-]?(\d+,?\d*|,\d+)([eE][+-]?\d+)?")
INFINITY = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
#: dates whose day/month order a reader would have to guess
OTHER_DATE = re.compile(
    rf"\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}( \d{{1,2}}:\d{{2}}(:\d{{2}})?)?|\d{{1,2}} {_MONTH},? \d{{2,4}}"
    rf"|{_MONTH} \d{{1,2}},? \d{{2,4}}"
)
DELIMITERS = ",;\t|"
TEXT_CELLS = ("error", "missing")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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


def _is_number(cell: str) -> bool:
    """Whether a cell is a decimal number (``float`` alone also takes ``1_042`` and ``0x1p3``)."""
    cell = cell.strip()
    return bool(NUMBER.fullmatch(cell)) or cell.lower() in INFINITY


def _is_float(cell: str) -> bool:
    """A number or ``nan``: what the strict numeric reader and numeric labels accept."""
    return _is_number(cell) or cell.strip().lower() == "nan"


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=4)


def _unique_names(names: list[str], where: str) -> list[str]:
    """Names made unique (the second ``a`` becomes ``a.1``), with a warning saying so."""
    out: list[str] = []
    for i, name in enumerate(names):
        name = name or f"x{i}"  # an empty header cell (R's row names) gets its number
        new, k = name, 0
        while new in out or (new != name and new in names):
            k += 1
            new = f"{name}.{k}"
        out.append(new)
    renamed = [f"{a!r} -> {b!r}" for a, b in zip(names, out) if a and a != b]
    if renamed:
        _warn(f"{where}: duplicate column names made unique ({', '.join(renamed)}); each keeps its own data")
    return out


def _selected(selection: Iterable[Any], names: list[str], what: str) -> set[int]:
    """The column indices named by ``selection`` (names or numbers); an unknown one is an error."""
    chosen = set()
    for key in selection:
        if isinstance(key, str) and key in names:
            chosen.add(names.index(key))
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(names):
            chosen.add(int(key))
        else:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{what}: {key!r} is not a column of the table.{hint} Its columns are {names} "
                f"(or 0..{len(names) - 1})"
            )
    return chosen


# --------------------------------------------------------------------------- one column of text cells


@dataclass
class _Cells:
    """One column of a CSV file: its stripped cells and their line numbers in the file."""

    name: str
    cells: list[str]
    lines: list[int]
    where: str
    decimal_comma: bool = False  # the file is not comma-delimited: "1,5" may be 1.5

    def present(self) -> list[int]:
        return [i for i, c in enumerate(self.cells) if c.lower() not in MISSING_TOKENS]


def _parse_column(col: _Cells, declared: bool, text_cells: str) -> tuple[np.ndarray, list[str] | None]:
    """One column's values (NaN where missing) and, for text, its sorted levels (codes)."""
    present = col.present()
    if declared:
        return _levels(col)
    if _decimal_commas(col, present):
        _warn(f"{col.where}: column {col.name!r} is read with decimal commas (1,5 as 1.5)")
        col = dataclasses.replace(col, cells=[c.replace(",", ".") for c in col.cells])
    numeric = [_is_number(col.cells[i]) for i in present]
    if all(numeric):
        return _numbers(col), None
    if all(ISO_DATE.fullmatch(col.cells[i]) for i in present):
        return _days(col), None
    if all(OTHER_DATE.fullmatch(col.cells[i].lower()) for i in present):
        i = present[0]
        raise DataError(
            f"{col.where}:{col.lines[i]}: column {col.name!r} holds dates such as {col.cells[i]!r} whose "
            "day/month order is ambiguous: write them as ISO dates (2021-04-03), which are read as days "
            "since 1970-01-01, or remove the column"
        )
    if 2 * sum(numeric) >= len(present):
        return _stray_text(col, [i for i, ok in zip(present, numeric) if not ok], text_cells), None
    return _levels(col)


def _decimal_commas(col: _Cells, present: list[int]) -> bool:
    cells = [col.cells[i] for i in present]
    return (
        col.decimal_comma and any("," in c for c in cells) and all(DECIMAL_COMMA.fullmatch(c) for c in cells)
    )


def _levels(col: _Cells) -> tuple[np.ndarray, list[str]]:
    present = col.present()
    levels = sorted({col.cells[i] for i in present})
    code = {v: i for i, v in enumerate(levels)}
    values = np.full(len(col.cells), np.nan)
    values[present] = [code[col.cells[i]] for i in present]
    return values, levels


def _numbers(col: _Cells, skip: Iterable[int] = ()) -> np.ndarray:
    """The numbers of a column (NaN where missing or in ``skip``); integers float64 cannot
    hold exactly are warned about."""
    skip = set(skip)
    values = np.full(len(col.cells), np.nan)
    big = []
    for i in col.present():
        if i in skip:
            continue
        cell = col.cells[i]
        values[i] = float(cell)
        if INTEGER.fullmatch(cell) and abs(int(cell)) > EXACT_INTEGERS:
            big.append(i)
    if big:
        i = big[0]
        _warn(
            f"{col.where}:{col.lines[i]}: column {col.name!r} holds {len(big)} integers beyond 2**53 such "
            f"as {col.cells[i]}, read as the nearest float64 ({values[i]:.0f}): digits past the 16th are "
            "lost (an identifier? remove the column)"
        )
    return values


def _days(col: _Cells) -> np.ndarray:
    """ISO dates as days since 1970-01-01 (a time without a zone is taken as UTC)."""
    values = np.full(len(col.cells), np.nan)
    for i in col.present():
        try:
            moment = datetime.fromisoformat(col.cells[i].replace("Z", "+00:00"))
        except ValueError:
            raise DataError(
                f"{col.where}:{col.lines[i]}: column {col.name!r} holds {col.cells[i]!r}, not a date"
            ) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        values[i] = (moment - _EPOCH).total_seconds() / 86400.0
    _warn(f"{col.where}: column {col.name!r} holds dates: read as days since 1970-01-01")
    return values


def _stray_text(col: _Cells, bad: list[int], text_cells: str) -> np.ndarray:
    """A numeric column with a few text cells: an error naming them, or those cells missing."""
    shown = ", ".join(f"line {col.lines[i]} {col.cells[i]!r}" for i in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    if text_cells == "missing":
        _warn(f"{col.where}: column {col.name!r}: {len(bad)} text cells read as missing ({shown}{more})")
        return _numbers(col, skip=bad)
    raise DataError(
        f"{col.where}:{col.lines[bad[0]]}: column {col.name!r} holds numbers but also the text "
        f"{col.cells[bad[0]]!r} ({len(bad)} text cells: {shown}{more}); correct them, or empty them (an "
        f"empty or NA cell is missing), or read them as missing (text_cells='missing'; command line: "
        f"--text-cells missing), or model the column as categories (categorical=[{col.name!r}]; command "
        f"line: --categorical {col.name})"
    )


# --------------------------------------------------------------------------- CSV files


def _has_header(first: list[str], rest: list[list[str]], skip: int | None) -> bool:
    cells = [(i, c) for i, c in enumerate(first) if i != skip]
    if all(_is_number(c) or _is_missing(c) for _, c in cells):
        return False
    below = rest[:50]
    return all(not _is_number(c) for _, c in cells) or any(
        not _is_number(c) and all(_is_number(r[i]) or _is_missing(r[i]) for r in below if i < len(r))
        for i, c in cells
    )


def read_table(
    path: str | Path,
    label_column: str | int | None = None,
    *,
    categorical: Iterable[str | int] = (),
    text_cells: str = "error",
    encoding: str | None = None,
) -> RawTable:
    """Read a CSV table with an optional header row.

    Empty, ``NA``, ``NaN`` or ``?`` cells are missing; text columns become categories coded
    0..K-1 in sorted order (see the module's docstring for what else is read right or refused).

    Args:
        path: the CSV file.
        label_column: a header name or a column number from 0 holding class labels.
        categorical: names or numbers of columns to read as categories whatever they hold.
        text_cells: what a few text cells in a numeric column are: ``"error"`` (the default,
            naming them) or ``"missing"``.
        encoding: the file's text encoding; by default UTF-8 (with or without a byte-order
            mark) or UTF-16 with a byte-order mark.

    Returns:
        the :class:`RawTable` of the feature columns, with the labels when asked for.
    """
    if text_cells not in TEXT_CELLS:
        raise ConfigError(f"text_cells must be one of {', '.join(TEXT_CELLS)}, got {text_cells!r}")
    path = Path(path)
    rows, lines, delimiter = _csv_rows(path, encoding)
    guess = _numbered_column(label_column, len(rows[0]))
    header = _has_header(rows[0], rows[1:], guess)
    given = [c.strip() for c in rows[0]] if header else [f"x{i}" for i in range(len(rows[0]))]
    names = _unique_names(given, str(path))
    body, body_lines = (rows[1:], lines[1:]) if header else (rows, lines)
    label_idx = None if label_column is None else _label_index(label_column, names, header, path)
    if not body:
        raise DataError(f"{path} has no data points (only a header row); add rows, or pass another file")
    if label_idx is not None and len(names) == 1:
        raise DataError(f"{path} has no features: its only column is the label column {names[0]!r}")
    for lineno, row in zip(body_lines, body):
        if len(row) != len(names):
            raise DataError(
                f"{path}:{lineno}: expected {len(names)} columns, found {len(row)}; give every row the header's columns"
            )
    declared = _selected(categorical, names, "categorical")
    features = [i for i in range(len(names)) if i != label_idx]
    columns = [
        _parse_column(
            _Cells(names[i], [r[i].strip() for r in body], body_lines, str(path), delimiter != ","),
            i in declared,
            text_cells,
        )
        for i in features
    ]
    values = np.column_stack([v for v, _ in columns])
    levels = {j: lv for j, (_, lv) in enumerate(columns) if lv is not None}
    labels = None
    if label_idx is not None:
        label_name = names[label_idx] if header else str(label_idx)
        labels = _csv_labels(path, [r[label_idx].strip() for r in body], label_name, body_lines)
    return RawTable(values, [names[i] for i in features], levels, labels)


def _decode(path: Path, encoding: str | None) -> str:
    """The text of ``path``: UTF-8 (a byte-order mark dropped) or UTF-16 with its mark, unless
    ``encoding`` is given; a decoding error names the file, the line and the byte."""
    data = path.read_bytes()
    if encoding is None:
        utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: byte 0x{data[e.start]:02x} is not {encoding} text (a Latin-1 or Windows-1252 "
            "file?): save the file as UTF-8, or name its encoding: read_table(path, encoding='latin-1'); command "
            "line: --encoding latin-1"
        ) from None
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r} for {path}") from None
    if text.count("\x00") > len(text) // 4:
        raise DataError(
            f"{path} looks like UTF-16 text without a byte-order mark (every other byte is 0): save it "
            "as UTF-8, or name its encoding: read_table(path, encoding='utf-16-le'); command line: "
            "--encoding utf-16-le"
        )
    return text


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """The CSV dialect of ``text``: the sniffed delimiter among ``, ; tab |``; a comma when the
    sniffer is unsure or a comma splits the rows just as consistently."""
    head = text[: 1 << 16].splitlines()  # the first lines, without splitting a large file
    sample = "\n".join(head[: min(50, max(len(head) - 1, 1))] if len(text) > 1 << 16 else head[:50])
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
    except csv.Error:
        return csv.excel
    if sniffed.delimiter == "," or _columns(sample, csv.excel) > 1:
        return csv.excel
    return sniffed


def _columns(sample: str, dialect: Any) -> int:
    """The number of columns every row of ``sample`` has under ``dialect`` (0 if they differ)."""
    widths = {len(r) for r in csv.reader(io.StringIO(sample, newline=""), dialect) if r}
    return widths.pop() if len(widths) == 1 else 0


def _csv_rows(path: Path, encoding: str | None = None) -> tuple[list[list[str]], list[int], str]:
    """The non-blank rows of the CSV file at ``path`` (at least one), their line numbers and
    the delimiter."""
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}; check the path (--data-path)")
    text = _decode(path, encoding)
    dialect = _dialect(text)
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    rows, lines = [], []
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as e:
        hint = (
            ': a cell that long usually starts at an unclosed quote ("), which swallows the lines after it'
            if "field limit" in str(e)
            else ""
        )
        raise DataError(f"{path}:{reader.line_num}: {e}{hint}") from None
    if not rows:
        raise DataError(f"{path} is empty; pass a CSV file with a header row and data rows")
    return rows, lines, dialect.delimiter


# --------------------------------------------------------------------------- frames and arrays


def _from_frame(frame: Any, declared: set[int]) -> RawTable:
    """A pandas ``DataFrame``: text, category and boolean columns coded, numbers as they are,
    dates as days since 1970-01-01; columns taken by position, so duplicate names are safe."""
    names = _unique_names([str(n) for n in frame.columns], "the DataFrame")
    values, levels = [], {}
    for j, name in enumerate(names):
        col = frame.iloc[:, j]
        kind = col.dtype.kind
        if j in declared or kind not in "biufMm":
            column, lv = _frame_levels(col, name, frame.index)
            values.append(column)
            if lv is not None:
                levels[j] = lv
        elif kind in "Mm":
            values.append(_frame_days(col, name))
        else:
            values.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            if kind in "iu" and _beyond_exact(col):
                _warn(
                    f"DataFrame column {name!r} holds integers beyond 2**53: read as the nearest float64 "
                    "(digits past the 16th are lost; an identifier? drop the column)"
                )
    return RawTable(np.column_stack(values), names, levels)


def _beyond_exact(col: Any) -> bool:
    """Whether an integer column holds a value float64 cannot hold exactly (missing cells skipped)."""
    present = col.dropna()
    return bool(len(present)) and max(abs(int(present.min())), abs(int(present.max()))) > EXACT_INTEGERS


def _frame_days(col: Any, name: str) -> np.ndarray:
    """A datetime (days since 1970-01-01, UTC) or timedelta (days) column as numbers."""
    if col.dtype.kind == "M":
        if getattr(col.dt, "tz", None) is not None:
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = col.to_numpy(dtype="datetime64[ns]")
        days = (stamps - np.datetime64(0, "ns")).astype(np.float64) / 86400e9
        _warn(f"DataFrame column {name!r} holds dates: read as days since 1970-01-01")
    else:
        stamps = col.to_numpy(dtype="timedelta64[ns]")
        days = stamps.astype(np.float64) / 86400e9
        _warn(f"DataFrame column {name!r} holds durations: read as days")
    return np.where(np.isnat(stamps), np.nan, days)


def _frame_levels(col: Any, name: str, index: Any) -> tuple[np.ndarray, list[str] | None]:
    """A text (object, category, string) column coded by its sorted labels; a column of
    numbers with a few text cells among them is an error naming the rows."""
    cells = col.astype(object).where(col.notna(), None).tolist()
    numbers = [
        i for i, c in enumerate(cells) if isinstance(c, (int, float, np.number)) and not isinstance(c, bool)
    ]
    present = [i for i, c in enumerate(cells) if c is not None]
    if numbers and 2 * len(numbers) >= len(present) and len(numbers) < len(present):
        bad = [i for i in present if i not in set(numbers)]
        shown = ", ".join(f"row {index[i]!r} {cells[i]!r}" for i in bad[:3])
        raise DataError(
            f"DataFrame column {name!r} holds numbers but also {len(bad)} text cells ({shown}); correct "
            f"them or set them to None / NaN (missing), or declare categorical=[{name!r}] to model the "
            "column as categories"
        )
    labels = sorted({str(c) for c in cells if c is not None})
    code = {v: i for i, v in enumerate(labels)}
    return np.array([np.nan if c is None else code[str(c)] for c in cells], dtype=np.float64), labels


def as_raw_table(
    table: Any, names: list[str] | None = None, categorical: Iterable[str | int] = ()
) -> RawTable:
    """A :class:`RawTable` from a ``RawTable``, a pandas ``DataFrame`` or an array ``(n, D)``.

    Args:
        table: the table.
        names: the column names of an array (one per column), or new names for a frame's.
        categorical: names or numbers of number-coded columns to treat as categories.

    Returns:
        the :class:`RawTable`; a name or ``categorical`` entry that does not fit the table is
        a :class:`~pyro_vae.errors.ConfigError`.
    """
    categorical = list(categorical or ())
    if isinstance(table, RawTable):
        if names is not None or categorical:
            raise ConfigError(
                "a RawTable is read already: give names and categorical to read_table or as_raw_table"
            )
        return table
    frame = hasattr(table, "columns") and hasattr(table, "dtypes")
    if frame:
        width = table.shape[1]
    else:
        # a copy: declared categories are coded in place, and a float64 array would share memory
        values = as_tensor(table, dtype=torch.float64).detach().cpu().numpy().copy()
        if values.ndim != 2:
            raise DataError(f"a table must be 2-D (rows, columns), got shape {values.shape}")
        width = values.shape[1]
    if names is not None and len(names) != width:
        raise ConfigError(f"names= gives {len(names)} names for a table of {width} columns")
    if frame:
        if names is not None:
            table = table.set_axis([str(n) for n in names], axis=1)
        return _from_frame(table, _selected(categorical, [str(n) for n in table.columns], "categorical"))
    names = (
        _unique_names([str(n) for n in names], "names=")
        if names is not None
        else [f"x{i}" for i in range(width)]
    )
    levels = {}
    for j in sorted(_selected(categorical, names, "categorical")):
        present = np.unique(values[~np.isnan(values[:, j]), j])
        levels[j] = [f"{v:g}" for v in present]
        values[:, j] = np.where(np.isnan(values[:, j]), np.nan, np.searchsorted(present, values[:, j]))
    return RawTable(values, names, levels)


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
        raise DataError(
            f"label column {label_column!r} is not in {path}{where}: it has {columns}; pick one of them (--label-column)"
        ) from None
    if not 0 <= idx < len(names):
        raise DataError(
            f"label column {idx} is out of range: {path} has {columns}, numbered from 0; pick one of them (--label-column)"
        )
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
            f"{path}: non-numeric values in column(s) {text}: pyro_vae.data.tables.read_table and "
            "load_table (and --dataset csv) code them as categories"
        )
    return table.values, table.labels, table.names


def _read_numeric_csv(
    path: str | Path, label_column: str | int | None = None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The strict reader of whole numbers and decimals (every cell a number)."""
    path = Path(path)
    rows, lines, _ = _csv_rows(path)
    first = rows[0]
    guess = _numbered_column(label_column, len(first))
    has_header = not all(_is_number(c) for i, c in enumerate(first) if i != guess)
    header = _unique_names([c.strip() for c in first], str(path)) if has_header else None
    body, body_lines = (rows[1:], lines[1:]) if header else (rows, lines)
    names = header or [f"x{i}" for i in range(len(first))]
    label_idx = None if label_column is None else _label_index(label_column, names, has_header, path)
    if not body:
        raise DataError(f"{path} has no data points (only a header row); add rows, or pass another file")
    if label_idx is not None and len(names) == 1:
        raise DataError(f"{path} has no features: its only column is the label column {names[0]!r}")
    table, label_cells = _csv_body(path, body, len(names), label_idx, body_lines)
    keep = [names[i] for i in range(len(names)) if i != label_idx]
    if label_idx is None:
        return table, None, keep
    label_name = names[label_idx] if header else str(label_idx)
    return table, _csv_labels(path, label_cells, label_name, body_lines), keep


def _numbered_column(label_column: str | int | None, num_columns: int) -> int | None:
    """The label column when given by number: it may hold names, even in the first data row."""
    if isinstance(label_column, (int, str)) and not isinstance(label_column, bool):
        text = str(label_column).strip()
        if text.isdigit() and int(text) < num_columns:
            return int(text)
    return None


def _csv_body(
    path: Path, body: list[list[str]], num_columns: int, label_idx: int | None, lines: list[int]
) -> tuple[np.ndarray, list[str]]:
    """The feature table and the label cells (stripped) of the data rows, at ``lines`` of the file."""
    values, label_cells = [], []
    for lineno, row in zip(lines, body):
        if len(row) != num_columns:
            raise DataError(
                f"{path}:{lineno}: expected {num_columns} columns, found {len(row)}; give every row the same columns"
            )
        cells = [c for i, c in enumerate(row) if i != label_idx]
        bad = [c for c in cells if not _is_float(c)]
        if bad:
            raise DataError(f"{path}:{lineno}: non-numeric value {bad[0].strip()!r} in {row}")
        values.append([float(c) for c in cells])
        if label_idx is not None:
            label_cells.append(row[label_idx].strip())
    return np.asarray(values, dtype=np.float64), label_cells


def _csv_labels(path: Path, label_cells: list[str], label_name: str, lines: list[int]) -> np.ndarray:
    """Class numbers from whole numbers, or from names numbered in sorted order."""
    if all(_is_float(c) for c in label_cells):
        numbers = np.asarray([float(c) for c in label_cells])
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}:{lines[i]}: label {label_cells[i]!r} (column {label_name!r}) is not a whole "
                f"number; labels must be class numbers or class names ({int(bad.sum())} are not)"
            )
        return numbers.astype(np.int64)
    if "" in label_cells:
        i = label_cells.index("")
        raise DataError(f"{path}:{lines[i]}: missing label in column {label_name!r}")
    return integer_labels(np.asarray(label_cells))


__all__ = ["RawTable", "read_table", "read_csv", "as_raw_table", "MISSING_TOKENS"]
