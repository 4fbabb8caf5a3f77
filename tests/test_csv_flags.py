"""The CSV reader's choices on the command line: --text-cells, --categorical and --encoding,
named by the reader's own messages, refused for data that are not a CSV table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pyro_vae.app.cli import main
from pyro_vae.data import load_dataset

FAST = ["--epochs", "1", "--hidden", "8", "--eval-samples", "5", "--num-threads", "1", "--no-progress"]


def _table(tmp_path, stray: str = "oops", encoding: str = "utf-8"):
    rng = np.random.default_rng(0)
    rows = ["size,code,town"] + [
        f"{rng.normal():.3f},{rng.integers(1, 4)},{'Sète' if i % 2 else 'Agde'}" for i in range(60)
    ]
    rows[11] = f"{stray},2,Agde"
    path = tmp_path / "t.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode(encoding))
    return path


def _train(tmp_path, path, *flags):
    out = tmp_path / "run"
    return main(
        ["train", "--dataset", "csv", "--data-path", str(path), "--out", str(out), *FAST, *flags]
    ), out


def test_a_text_cell_names_the_command_line_choices(tmp_path, capsys):
    code, out = _train(tmp_path, _table(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "'oops'" in err and "--text-cells missing" in err and "--categorical size" in err


def test_text_cells_missing_reads_the_cell_as_missing(tmp_path):
    path = _table(tmp_path)
    code, out = _train(tmp_path, path, "--text-cells", "missing")
    assert code == 0
    assert json.loads((out / "config.json").read_text())["run"]["data"]["text_cells"] == "missing"
    # the run's data: one cell missing in all, the text one
    with pytest.warns(UserWarning, match="1 text cells read as missing"):
        splits = load_dataset("csv", path=path, text_cells="missing")
    assert sum(int(torch.isnan(splits.split(s)[0]).sum()) for s in ("train", "valid", "test")) == 1


def test_categorical_names_a_column_read_as_categories(tmp_path):
    code, out = _train(tmp_path, _table(tmp_path, stray="1.0"), "--categorical", "code")
    assert code == 0
    columns = {c["name"]: c for c in json.loads((out / "config.json").read_text())["columns"]["columns"]}
    assert columns["code"]["kind"] == "categorical"


def test_encoding_reads_a_latin_1_file(tmp_path, capsys):
    path = _table(tmp_path, stray="1.0", encoding="latin-1")
    code, _ = _train(tmp_path, path)
    err = capsys.readouterr().err
    assert code == 2 and "--encoding latin-1" in err
    code, _ = _train(tmp_path, path, "--encoding", "latin-1")
    assert code == 0


@pytest.mark.parametrize(
    "flags", [["--text-cells", "missing"], ["--categorical", "a"], ["--encoding", "latin-1"]]
)
def test_the_reader_choices_are_refused_for_other_data(tmp_path, capsys, flags):
    code = main(["train", "--out", str(tmp_path / "run"), *FAST, *flags])
    assert code == 2 and "read a CSV table (--dataset csv)" in capsys.readouterr().err
