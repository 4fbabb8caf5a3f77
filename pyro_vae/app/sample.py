"""``pyro-vae sample``: synthetic rows of a table run as a CSV file, optionally given some columns.

The rows follow the rule of :mod:`pyro_vae.infer.synthesis` (text levels as their labels,
integers and counts as integers, binary as 0/1); columns the run dropped (constant in its
training split) are not written. ``--given '{"column": value}'`` draws the other columns from
their conditional by importance resampling and prints its effective sample size.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyro_vae.data.tables import TableSchema
from pyro_vae.errors import DataError, RunDirectoryError
from pyro_vae.infer.synthesis import TableTypes, raw_values, sample_model_rows
from pyro_vae.io import atomic_write, read_json
from pyro_vae.model import CONFIG_FILE, VAE


def sample_run(
    run_dir: str | Path,
    n: int,
    out: str | Path,
    *,
    given: Mapping[str, Any] | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    echo=print,
) -> Path:
    """Write ``n`` synthetic rows of the table run in ``run_dir`` to the CSV file ``out``.

    Args:
        run_dir: a run directory of ``pyro-vae train --dataset csv``.
        n: the number of rows.
        out: the CSV file to write; an existing file is refused, never overwritten.
        given: ``{column: value}`` to condition on, in the table's own units and labels.
        num_samples: importance proposals of ``z`` for a conditional sample.
        seed: seeds every draw.
        echo: where the one-line report goes.

    Returns:
        the path written.
    """
    out = Path(out)
    if out.exists():
        raise RunDirectoryError(f"{out} exists: sample never overwrites a file; choose another --out")
    if not out.parent.is_dir():
        raise RunDirectoryError(f"the folder of {out} does not exist: create it first")
    schema = _schema(Path(run_dir))
    vae = VAE.load(run_dir)
    types = TableTypes(list(schema.source_names))
    rows, ess, fixed = sample_model_rows(
        vae, schema, types, n, given=given, num_samples=num_samples, seed=seed
    )
    atomic_write(out, lambda tmp: _write_csv(tmp, schema, raw_values(rows, schema, fixed)))
    dropped = f"; not written (dropped in training): {', '.join(d['name'] for d in schema.dropped)}"
    condition = (
        "" if ess is None else f" given {json.dumps(given)}, effective sample size {ess:.1f} of {num_samples}"
    )
    echo(f"wrote {n} rows{condition} to {out}{dropped if schema.dropped else ''}")
    return out


def _schema(run_dir: Path) -> TableSchema:
    payload = read_json(run_dir / CONFIG_FILE)
    if "columns" not in payload:
        raise DataError(
            f"{run_dir} is not a run on a table (its {CONFIG_FILE} has no 'columns'): sample writes the rows "
            "of a run trained with --dataset csv"
        )
    return TableSchema.from_dict(payload["columns"])


def _write_csv(path: Path, schema: TableSchema, values) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(schema.names)
        for row in values:
            writer.writerow([_cell(v, c) for v, c in zip(row, schema.columns)])


def _cell(value: float, spec) -> str:
    if value != value:  # NaN
        return ""
    if spec.levels is not None and spec.values is None:
        return spec.levels[int(value)]
    kind = spec.column_kind
    if float(value).is_integer() and (kind.integral or kind.num_codes(spec) is not None):
        return str(int(value))
    return repr(float(value))
