r"""Imputed, synthetic and conditional rows of a table, in the table's own units and types.

The one rule by which a row in model space becomes a row of the table (:func:`rows_to_table`):

=============  ==================================================================================
column kind    value written
=============  ==================================================================================
real, unit     the number in the column's own units (standardization undone); unit clipped to [0, 1]
integer        rounded to the nearest integer
count          rounded to the nearest integer, at least 0
binary         0 or 1 (a code of 0.5 or more is 1)
categorical    the level's own label (a text, a category, a boolean, or the number it stands for)
date, time     a date or duration of the column's dtype (the model sees days, as the frame was read)
dropped        the single value the column held in training (NaN if it held none)
=============  ==================================================================================

A DataFrame comes back with the training frame's column names, order and dtypes (an integer
column as integers, a category column as that category, a text column as text); an array as
``float64`` in raw units. Which value fills a cell is chosen by ``fill``:

* ``"mean"``: for real, unit, integer and count columns the conditional mean
  :math:`\mathbb E[x_d \mid x_o]` (then rounded as above); for binary and categorical columns
  the most probable level under the conditional :math:`p(x_d \mid x_o)`;
* ``"draw"``: a draw from :math:`p(x_m \mid x_o)`.

Both come from self-normalised importance sampling on the VAE's log-density seam, as in
:mod:`pyro_vae.infer.imputation`: :math:`z_k \sim r(z)`, weights
:math:`w_k \propto p(x_o \mid z_k) p(z_k) / r(z_k)`, with the proposal
:math:`r = \tfrac12 q(z \mid x_o) + \tfrac12 p(z)` (see :func:`proposal_log_weights`); draws
resample :math:`z` by the weights and draw :math:`x_m \sim p(x_m \mid z)`, which is exact as
the number of proposals grows. A VAE built without ``missing=True`` cannot encode a partly
observed row; its proposal is then the prior, :math:`w_k \propto p(x_o \mid z_k)`. The effective sample size
:math:`(\sum_k w_k)^2 / \sum_k w_k^2` of each row is reported; a row none of whose
proposals gives its observed cells any density has no support and is an error.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from pyro_vae.data.tables import RawTable, TableSchema, as_raw_table
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.infer.evaluation import CHUNK_ELEMENTS, sampling
from pyro_vae.model import VAE
from pyro_vae.utils import positive_int

FILLS = ("mean", "draw")
#: a conditional sample whose effective sample size is below this is worth a warning
LOW_ESS = 20.0


class Draws(NamedTuple):
    """Draws ``(m, n, D)`` from :math:`p(x_m \\mid x_o)` (observed cells kept) and each row's ESS ``(n,)``."""

    values: torch.Tensor
    ess: torch.Tensor


# --------------------------------------------------------------------------- the table's types


@dataclass
class TableTypes:
    """What turns raw numbers back into the fitted table: its columns' names, dtypes and labels.

    ``labels`` maps, per column with text levels, each level's text (as
    :class:`~pyro_vae.data.tables.TableSchema` records it) to the original label; ``constants``
    holds the single value of each column the schema dropped (NaN when it held none).
    """

    names: list[str]
    dtypes: list[Any] | None = None
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    columns: list[Any] | None = None  # a frame's own column labels (names are their text)

    @property
    def is_frame(self) -> bool:
        return self.dtypes is not None

    @classmethod
    def of(cls, table: Any, raw: RawTable, schema: TableSchema) -> TableTypes:
        """The types of ``table`` (a DataFrame or an array) as read into ``raw`` and ``schema``."""
        frame = hasattr(table, "columns") and hasattr(table, "dtypes")
        labels: dict[str, dict[str, Any]] = {}
        for j, levels in raw.levels.items():
            column = table.iloc[:, j].dropna().unique() if frame else np.unique(_present(raw, table, j))
            text = {(str(v) if frame else f"{v:g}"): v for v in column}
            labels[raw.names[j]] = {level: text.get(level, level) for level in levels}
        constants = {}
        for d in schema.dropped:
            j = raw.names.index(d["name"])
            present = raw.values[~np.isnan(raw.values[:, j]), j]
            value = float(present[0]) if present.size else math.nan
            if j in raw.levels and present.size:
                value = labels[d["name"]][raw.levels[j][int(value)]]
            constants[d["name"]] = value
        dtypes = list(table.dtypes) if frame else None
        return cls(list(raw.names), dtypes, labels, constants, list(table.columns) if frame else None)


def _present(raw: RawTable, table: Any, j: int) -> np.ndarray:
    column = np.asarray(table, dtype=np.float64)[:, j]
    return column[~np.isnan(column)]


def table_values(table: Any, schema: TableSchema, types: TableTypes, categorical=()) -> np.ndarray:
    """A table like the fitted one (a frame or an array) as raw rows ``(n, len(names))``, each text
    level coded as in training; a level training never saw is a :class:`~pyro_vae.errors.DataError`."""
    raw = as_raw_table(table, None if types.is_frame else types.names, categorical)
    if raw.names != types.names:
        raise DataError(f"the table's columns {raw.names} are not the fitted table's {types.names}")
    values = raw.values.copy()
    fitted = {c.name: c.levels for c in schema.columns if c.levels is not None and c.values is None}
    for j, levels in raw.levels.items():
        name = raw.names[j]
        if name not in fitted:  # a dropped column: not scored, whatever it holds
            continue
        unknown = [level for level in levels if level not in fitted[name]]
        if unknown:
            raise DataError(
                f"column {name!r} holds {unknown[0]!r}, not one of its levels in training "
                f"({', '.join(fitted[name])})"
            )
        index = np.array([fitted[name].index(level) for level in levels], dtype=np.float64)
        codes = values[:, j]
        values[:, j] = np.where(np.isnan(codes), np.nan, index[np.nan_to_num(codes).astype(int)])
    return values


def snap(x: torch.Tensor, schema: TableSchema) -> torch.Tensor:
    """Model-space rows with each binary and categorical cell a valid code (rounded, clipped)."""
    x = x.detach().cpu().double().clone()
    for j, c in enumerate(schema.columns):
        x[:, j] = torch.from_numpy(c.column_kind.snap(x[:, j].numpy(), c))
    return x


def raw_values(x: torch.Tensor, schema: TableSchema, fixed: Mapping[int, float] | None = None) -> np.ndarray:
    """Model space ``(n, D)`` to raw numbers per kept column, by the module's rule (codes for text levels).

    ``fixed`` (kept column index -> raw value, as :func:`given_raw` gives) writes those values
    exactly, not through float32 model space.
    """
    # snapped codes are whole numbers, so a numeric level decodes to exactly its own number
    out = schema.to_raw(snap(x, schema).float())
    for j, c in enumerate(schema.columns):
        out[:, j] = c.column_kind.to_support(out[:, j], c)
    for j, value in (fixed or {}).items():
        out[:, j] = value
    return out


def rows_to_table(
    x: torch.Tensor, schema: TableSchema, types: TableTypes, fixed: Mapping[int, float] | None = None
) -> Any:
    """Model-space rows ``(n, D)`` as the fitted table: a DataFrame of its dtypes, or a float64 array.

    Every column of the source table comes back, in order, by the rule in the module's
    docstring; ``fixed`` as in :func:`raw_values`.
    """
    values = raw_values(x, schema, fixed)
    kept = {name: j for j, name in enumerate(schema.names)}
    columns = []
    for name in types.names:
        if name not in kept:
            columns.append(np.full(len(values), types.constants.get(name, np.nan), dtype=object))
            continue
        column = values[:, kept[name]]
        spec = schema.columns[kept[name]]
        if name in types.labels and spec.values is None:  # text levels: codes to the original labels
            levels = [types.labels[name][level] for level in spec.levels]
            column = np.array([None if np.isnan(v) else levels[int(v)] for v in column], dtype=object)
        columns.append(column)
    if not types.is_frame:
        return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    import pandas as pd  # pandas is only needed for frames, which only a pandas user passes

    frame = pd.DataFrame(dict(zip(types.names, columns)))
    for name, dtype in zip(types.names, types.dtypes):
        if (
            getattr(dtype, "kind", "O") in "Mm"
        ):  # read as days (pyro_vae.data.reading): back to dates, durations
            frame[name] = _from_days(frame[name].to_numpy(dtype=np.float64), dtype)
    frame = frame.astype(
        dict(zip(types.names, [_castable(frame[n], t) for n, t in zip(types.names, types.dtypes)]))
    )
    return frame.set_axis(types.columns, axis=1) if types.columns is not None else frame


def _from_days(days: np.ndarray, dtype: Any) -> Any:
    """Days since 1970-01-01 (UTC) as dates of ``dtype``, or days as durations; NaN as NaT."""
    import pandas as pd

    nanoseconds = np.round(days * 86400e9)
    if dtype.kind == "m":
        return pd.to_timedelta(nanoseconds, unit="ns")
    stamps = pd.to_datetime(nanoseconds, unit="ns")
    tz = getattr(dtype, "tz", None)
    return stamps.tz_localize("UTC").tz_convert(tz) if tz is not None else stamps


def _to_days(value: Any, dtype: Any) -> float:
    """A given date or duration (anything pandas reads as one) as days, as the column was read."""
    import pandas as pd

    if dtype.kind == "m":
        return pd.Timedelta(value).value / 86400e9
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.value / 86400e9


def _castable(column: Any, dtype: Any) -> Any:
    """``dtype``, or its nullable form where the column keeps a missing cell an integer dtype cannot hold."""
    kind = getattr(dtype, "kind", "O")
    if kind in "iu" and column.isna().any():
        return "Int64"
    if kind == "b" and column.isna().any():
        return "boolean"
    return dtype


# --------------------------------------------------------------------------- conditioning


def given_raw(given: Mapping[str, Any], schema: TableSchema, types: TableTypes) -> dict[int, float]:
    """``given`` (column name -> value in the table's own units) as raw values by kept column index
    (a text level as its code); a given dropped column, constant in training, is checked and left out.

    Raises :class:`~pyro_vae.errors.ConfigError` for a column not in the table and
    :class:`~pyro_vae.errors.DataError` for a value outside its column's support.
    """
    if not isinstance(given, Mapping) or not given:
        raise ConfigError(f"given must be a non-empty mapping of column names to values, got {given!r}")
    raw = np.full((1, len(types.names)), np.nan)
    for name, value in given.items():
        j = _column(str(name), types.names)
        raw[0, j] = _raw_value(str(name), value, schema, types)
    coded = schema.coded(raw)[0]  # numeric levels coded; a number that is no level is an error here
    out = {}
    for j, c in enumerate(schema.columns):
        if not np.isnan(coded[j]):
            _check_support(c, float(coded[j]))
            out[j] = float(raw[0, schema.keep[j]])
    return out


def given_row(given: Mapping[str, Any], schema: TableSchema, types: TableTypes) -> torch.Tensor:
    """``given`` as one model-space row ``(1, D)``, NaN in the other columns (see :func:`given_raw`)."""
    fixed = given_raw(given, schema, types)
    raw = np.full((1, len(types.names)), np.nan)
    for j, value in fixed.items():
        raw[0, schema.keep[j]] = value
    return schema.transform(raw)


def _column(name: str, names: list[str]) -> int:
    if name in names:
        return names.index(name)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"given column {name!r} is not in the table{hint} Its columns: {', '.join(names)}")


def _raw_value(name: str, value: Any, schema: TableSchema, types: TableTypes) -> float:
    """One given value as the raw table holds it: a number, or a text level's code."""
    spec = next((c for c in schema.columns if c.name == name), None)
    if spec is None:  # dropped: certain, so a condition on it either holds or has no support
        if name not in types.constants:
            reason = next(d["reason"] for d in schema.dropped if d["name"] == name)
            raise DataError(f"given column {name!r} was dropped in training ({reason}): it cannot be given")
        constant = types.constants[name]
        if str(value) != str(constant) and not _same_number(value, constant):
            raise DataError(
                f"given {name}={value!r} has no support: the column held only {_show(constant)} in training"
            )
        return np.nan
    if spec.levels is not None and spec.values is None:
        levels = spec.levels
        labels = types.labels.get(name, {})  # a label is the original value: a text, or a number (arrays)
        match = [level for level, label in labels.items() if _same_label(label, value)]
        level = match[0] if match else str(value)
        if level not in levels:
            raise DataError(f"given {name}={value!r} is not one of the column's levels: {', '.join(levels)}")
        return float(levels.index(level))
    dtype = types.dtypes[types.names.index(name)] if types.is_frame else None
    try:
        number = _to_days(value, dtype) if getattr(dtype, "kind", "O") in "Mm" else float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"given {name}={value!r}: the column is numeric ({spec.kind}); give a number"
        ) from None
    if not math.isfinite(number):
        raise DataError(f"given {name}={value!r} must be a finite number")
    return number


def _same_label(label: Any, value: Any) -> bool:
    return str(label) == str(value) or _same_number(label, value)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _same_number(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _check_support(spec: Any, value: float) -> None:
    if not spec.column_kind.in_support(value, spec):
        raise DataError(f"given {spec.name}={value:g} is outside the column's support ({spec.kind} values)")


# --------------------------------------------------------------------------- importance sampling


def proposal_log_weights(vae: VAE, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` proposals of ``z`` per row of a shaped batch ``x`` and their log weights: ``(k, n)``, ``(k, n, L)``.

    For a VAE with ``missing`` the proposal is the defensive mixture
    :math:`\\tfrac12 q(z \\mid x_o) + \\tfrac12 p(z)`, half the draws from each, on the VAE's
    log-density seam (:meth:`~pyro_vae.model.VAE.log_weights`, :meth:`~pyro_vae.model.VAE.log_joint`):
    an encoder trained on complete rows can propose badly for a row with few observed cells
    (on factor analysis given 2 of 4 columns, an ESS of 300 of 4000 from q alone, 2000 from
    the mixture), and the prior's half bounds every weight by :math:`2\\,p(x_o \\mid z)`. A VAE
    without ``missing`` cannot encode missing cells: its proposal is the prior alone.
    """
    if not vae.missing and torch.isnan(x).any():
        z = vae.prior().sample((k, x.shape[0]))
        observed = ~torch.isnan(x)
        filled = torch.where(observed, x, vae.likelihood.placeholder(x))
        cells = vae.decode(z).base_dist.log_prob(filled)
        return torch.where(observed, cells, torch.zeros_like(cells)).flatten(2).sum(-1), z
    guided = vae.log_weights(x, k - k // 2)
    z = torch.cat([guided.z, vae.prior().sample((k // 2, x.shape[0]))]) if k > 1 else guided.z
    log_px_z, log_pz = vae.log_joint(z, x)
    log_q = guided.posterior.log_prob(z)
    proposal = torch.logaddexp(log_q, log_pz) - math.log(2) if k > 1 else log_q
    return log_px_z + log_pz - proposal, z


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """:math:`(\\sum_k w_k)^2 / \\sum_k w_k^2` over dim 0 of log weights ``(k, n)``."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)).nan_to_num(0.0)


def _checked(log_w: torch.Tensor, start: int, what: str) -> None:
    dead = ~torch.isfinite(torch.logsumexp(log_w, 0))
    if dead.any():
        i = start + int(dead.nonzero()[0])
        raise DataError(
            f"{what.format(row=i)} has no support under the model: none of the {log_w.shape[0]} "
            "proposals gives its observed cells any density"
        )


def _batches(vae: VAE, x: torch.Tensor, k: int):
    """``x`` (model space, NaN missing) shaped, on the VAE's device, in rows that fit a chunk."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32)
    vae.check_data(x, finite=vae.missing)
    x = vae.shaped(x.to(vae.device, torch.float32))
    rows = max(1, CHUNK_ELEMENTS // (k * vae.input_dim * max(vae.likelihood.num_params, 2)))
    return x, x.split(rows)


@torch.no_grad()
def conditional_draws(
    vae: VAE, x: torch.Tensor, m: int, num_samples: int = 1000, *, seed: int = 0, what: str = "row {row}"
) -> Draws:
    """``m`` draws from :math:`p(x_m \\mid x_o)` for each row of ``x`` (model space, NaN missing).

    ``num_samples`` proposals of ``z`` per row, resampled ``m`` times by their weights; the
    observed cells are kept. ``what`` names a row in the error raised when it has no support.
    """
    positive_int("m", m)
    positive_int("num_samples", num_samples)
    x, batches = _batches(vae, x, max(num_samples, m))
    values, ess, start = [], [], 0
    with sampling(vae, seed, vae.device):
        for batch in batches:
            log_w, z = proposal_log_weights(vae, batch, num_samples)
            _checked(log_w, start, what)
            pick = torch.distributions.Categorical(logits=log_w.T).sample((m,))  # (m, n)
            chosen = z.gather(0, pick.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
            draws = vae.decode(chosen).sample()
            values.append(torch.where(torch.isnan(batch), draws, batch))
            ess.append(effective_sample_size(log_w))
            start += len(batch)
    return Draws(torch.cat(values, 1), torch.cat(ess))


@torch.no_grad()
def conditional_point(
    vae: VAE, x: torch.Tensor, schema: TableSchema, num_samples: int = 1000, *, seed: int = 0
) -> torch.Tensor:
    """Each missing cell of ``x`` (model space) filled by the ``"mean"`` rule: conditional means of
    numeric columns, the most probable level of binary and categorical ones; observed cells kept."""
    positive_int("num_samples", num_samples)
    x, batches = _batches(vae, x, num_samples)
    out, start = [], 0
    with sampling(vae, seed, vae.device):
        for batch in batches:
            log_w, z = proposal_log_weights(vae, batch, num_samples)
            _checked(log_w, start, "row {row}")
            out.append(_point_batch(vae, batch, schema, torch.log_softmax(log_w, 0), z))
            start += len(batch)
    filled = torch.cat(out)
    return torch.where(torch.isnan(x), filled, x)


def _point_batch(
    vae: VAE, x: torch.Tensor, schema: TableSchema, log_w: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    decoded = vae.decode(z)
    filled = (log_w.exp().unsqueeze(-1) * vae.data_mean(decoded)).sum(0)  # (n, D)
    codes = [(j, c.column_kind.num_codes(c)) for j, c in enumerate(schema.columns)]
    discrete = [(j, k) for j, k in codes if k is not None]
    if not discrete:
        return filled
    cells = decoded.base_dist
    base = vae.likelihood.placeholder(x).expand(*z.shape[:2], -1).clone()
    scores = []
    for level in range(max(k for _, k in discrete)):
        value = base.clone()
        for j, k in discrete:
            value[..., j] = min(level, k - 1)
        mixture = torch.logsumexp(log_w.unsqueeze(-1) + cells.log_prob(value), 0)  # log p(x_j = level | x_o)
        scores.append(
            torch.stack(
                [
                    mixture[:, j] if level < k else torch.full_like(mixture[:, j], -math.inf)
                    for j, k in discrete
                ],
                -1,
            )
        )
    best = torch.stack(scores, 0).argmax(0).to(filled.dtype)  # (n, number of discrete columns)
    filled[:, [j for j, _ in discrete]] = best
    return filled


def warn_low_ess(ess: torch.Tensor, what: str) -> None:
    """A warning when a conditional sample rests on few effective proposals."""
    low = float(ess.min())
    if low < LOW_ESS:
        warnings.warn(
            f"{what}: effective sample size {low:.1f} of the importance proposals: the draws repeat few "
            "values of z; raise num_samples",
            stacklevel=3,
        )


# --------------------------------------------------------------------------- synthetic rows


class SampledRows(NamedTuple):
    """Synthetic rows in model space, with what turns them into the table's own values."""

    rows: torch.Tensor  # (n, D)
    ess: float | None  # effective sample size of a conditional sample; None without ``given``
    fixed: dict[int, float] | None  # the given columns' raw values, written back as given (None without)


@torch.no_grad()
def sample_model_rows(
    vae: VAE,
    schema: TableSchema,
    types: TableTypes,
    n: int,
    *,
    given: Mapping[str, Any] | None = None,
    num_samples: int = 1000,
    seed: int = 0,
) -> SampledRows:
    """``n`` synthetic rows in model space ``(n, D)``, with the ESS and the given columns' raw values:
    ``rows_to_table(rows, schema, types, fixed)`` or ``raw_values(rows, schema, fixed)`` gives them
    in the table's own units.

    Without ``given`` the rows are draws from the model, :math:`z \\sim p(z)`,
    :math:`x \\sim p(x \\mid z)`; with it, from :math:`p(\\text{other columns} \\mid \\text{given})`
    by importance resampling (:func:`conditional_draws` with ``num_samples`` proposals).
    """
    positive_int("n", n)
    if not given:
        with sampling(vae, seed, vae.device):
            return SampledRows(vae.sample(n), None, None)
    row = given_row(given, schema, types)
    text = ", ".join(f"{k}={v!r}" for k, v in given.items())
    draws = conditional_draws(vae, row, n, num_samples, seed=seed, what=f"the condition {text}")
    warn_low_ess(draws.ess, f"sampling given {text}")
    return SampledRows(draws.values[:, 0], float(draws.ess[0]), given_raw(given, schema, types))


__all__ = [
    "FILLS",
    "Draws",
    "TableTypes",
    "conditional_draws",
    "conditional_point",
    "effective_sample_size",
    "given_raw",
    "given_row",
    "proposal_log_weights",
    "raw_values",
    "rows_to_table",
    "sample_model_rows",
    "SampledRows",
    "snap",
    "table_values",
]
