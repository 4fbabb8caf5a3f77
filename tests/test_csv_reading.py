"""CSV files and frames as people have them (issue 22, item 5): each case read right or
refused with a message naming the file, line, column or cell."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import pyro_vae
from pyro_vae.app.cli import main
from pyro_vae.data.reading import as_raw_table, read_csv, read_table
from pyro_vae.data.tables import load_table
from pyro_vae.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def write(tmp_path, text: str, name: str = "t.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def numbers_csv(n: int = 60, sep: str = ",") -> str:
    rows = [sep.join(["a", "b", "c"])]
    rows += [sep.join([f"{RNG.normal():.4f}", f"{RNG.normal(10, 2):.3f}", str(i % 3)]) for i in range(n)]
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- names


def test_a_duplicate_csv_header_is_made_unique_and_each_column_keeps_its_data(tmp_path):
    a = RNG.normal(size=40)
    path = write(
        tmp_path, "a,a,b\n" + "".join(f"{v:.6f},{100 + 3 * v:.6f},{i % 2}\n" for i, v in enumerate(a))
    )
    with pytest.warns(UserWarning, match=r"duplicate column names made unique \('a' -> 'a.1'\)"):
        table = read_table(path)
    assert table.names == ["a", "a.1", "b"]
    with pytest.warns(UserWarning):
        splits = load_table(read_table(path))
    raw = splits.columns.to_raw(splits.train)
    # the old reader looked columns up by name: 'a.1' came back as a copy of 'a'
    np.testing.assert_allclose(raw[:, 1], 100 + 3 * raw[:, 0], rtol=1e-5)


def test_a_frame_with_duplicate_names_is_read_by_position(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(np.column_stack([np.arange(30.0) % 7, RNG.normal(size=30)]), columns=["x", "x"])
    with pytest.warns(UserWarning, match="'x' -> 'x.1'"):
        table = as_raw_table(frame)
    assert table.names == ["x", "x.1"]
    np.testing.assert_array_equal(table.values, frame.to_numpy())


def test_names_and_categorical_that_do_not_fit_the_table_are_refused():
    x = RNG.normal(size=(30, 3))
    with pytest.raises(ConfigError, match="names= gives 2 names for a table of 3 columns"):
        as_raw_table(x, names=["a", "b"])
    with pytest.raises(ConfigError, match=r"categorical: 'colour' is not a column.*Did you mean 'color'"):
        load_table(x, names=["color", "b", "c"], categorical=["colour"])
    with pytest.raises(ConfigError, match="categorical: 5 is not a column"):
        as_raw_table(x, categorical=[5])


def test_declared_categories_of_an_array_leave_the_callers_array_alone():
    x = np.column_stack([RNG.choice([2.5, 7.0, 11.0], 30), RNG.normal(size=30)])
    before = x.copy()
    table = as_raw_table(x, categorical=[0])
    np.testing.assert_array_equal(x, before)
    assert table.levels[0] == ["2.5", "7", "11"] and set(table.values[:, 0]) == {0.0, 1.0, 2.0}


def test_the_utf8_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    path = write(tmp_path, "\ufeff" + numbers_csv())
    assert read_table(path).names == ["a", "b", "c"]


# --------------------------------------------------------------------------- delimiters and encodings


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path, sep):
    path = write(tmp_path, numbers_csv(sep=sep))
    table = read_table(path)
    assert table.names == ["a", "b", "c"] and table.values.shape == (60, 3) and not table.levels


def test_a_semicolon_file_with_decimal_commas_reads_its_numbers(tmp_path):
    rows = ["a;b;c"] + [f"{i * 0.25:.2f};{i % 4};x{i % 3}".replace(".", ",") for i in range(40)]
    with pytest.warns(UserWarning, match="column 'a' is read with decimal commas"):
        table = read_table(write(tmp_path, "\n".join(rows) + "\n"))
    np.testing.assert_allclose(table.values[:, 0], np.arange(40) * 0.25)
    assert list(table.levels) == [2] and table.values[5, 1] == 1.0


def test_a_comma_file_with_semicolons_inside_text_stays_a_comma_file(tmp_path):
    rows = ["x,note"] + [f'{i},"a; b; c {i % 4}"' for i in range(30)]
    table = read_table(write(tmp_path, "\n".join(rows) + "\n"))
    assert table.names == ["x", "note"] and len(table.levels[1]) == 4


def test_a_latin1_file_is_an_error_naming_the_file_and_line(tmp_path):
    path = write(tmp_path, "city,x\nparis,1\nzürich,2\nrome,3\n", encoding="latin-1")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:3: byte 0xfc is not utf-8-sig text"):
        read_table(path)
    assert read_table(path, encoding="latin-1").levels[0] == ["paris", "rome", "zürich"]


def test_utf16_with_a_byte_order_mark_is_read_and_without_one_is_named(tmp_path):
    text = numbers_csv()
    assert read_table(write(tmp_path, text, "bom.csv", "utf-16")).names == ["a", "b", "c"]
    path = write(tmp_path, text, "le.csv", "utf-16-le")
    with pytest.raises(
        DataError, match=rf"{re.escape(str(path))} looks like UTF-16 text without a byte-order"
    ):
        read_table(path)


def test_an_over_long_cell_is_a_clear_error_naming_the_line(tmp_path, capsys):
    path = write(tmp_path, 'a,b\n1,2\n3,"' + "x" * 200_000 + "\n4,5\n")
    with pytest.raises(DataError, match=r":\d+: field larger than field limit .* an unclosed quote"):
        read_table(path)
    code = main(["train", "--dataset", "csv", "--data-path", str(path), "--out", str(tmp_path / "run")])
    assert code == 2 and "field larger than field limit" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- cells


def test_text_cells_in_a_numeric_column_are_named_with_the_choices(tmp_path):
    rows = ["a,b"] + [f"{i * 0.5},{i % 3}" for i in range(50)]
    rows[7], rows[31] = "oops,1", "3.5,2"
    rows[40] = "12\x00,1"  # a NUL byte
    path = write(tmp_path, "\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        read_table(path)
    message = str(e.value)
    assert f"{path}:8: column 'a' holds numbers but also the text 'oops'" in message
    assert "line 41 '12\\x00'" in message and "text_cells='missing'" in message
    assert "categorical=['a']" in message
    with pytest.warns(UserWarning, match="2 text cells read as missing"):
        table = read_table(path, text_cells="missing")
    assert np.isnan(table.values[[6, 39], 0]).all() and not table.levels
    assert read_table(path, categorical=["a"]).levels[0][-1] == "oops"


def test_a_frame_column_of_numbers_with_a_text_cell_names_the_row():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.5, "n.a.", 4.0] * 5, "b": RNG.normal(size=20)})
    with pytest.raises(DataError, match=r"column 'a' holds numbers but also 5 text cells \(row 2 'n.a.'"):
        as_raw_table(frame)


def test_underscores_hex_and_other_non_decimal_numbers_are_text(tmp_path):
    assert float("1_042") == 1042  # what the old reader did
    rows = ["n,x"] + [f"1_0{i:02d},{i}" for i in range(30)]
    table = read_table(write(tmp_path, "\n".join(rows) + "\n"))
    assert table.levels[0][0] == "1_000"  # text, not the number 1000
    with pytest.raises(DataError, match="column 'a' holds numbers but also the text '1_042'"):
        read_csv(write(tmp_path, "a,b\n1,2\n1_042,3\n", "strict.csv"))


def test_integers_beyond_2_to_the_53_are_warned(tmp_path):
    rows = ["id,x"] + [f"{1234567890123456789 + 7919 * i},{i % 5}" for i in range(30)]
    with pytest.warns(
        UserWarning, match=r":2: column 'id' holds 30 integers beyond 2\*\*53 such as 1234567890123456789"
    ):
        read_table(write(tmp_path, "\n".join(rows) + "\n"))


def test_a_frames_integers_beyond_2_to_the_53_are_warned():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": np.arange(30, dtype=np.int64) * 7919 + 2**62, "x": RNG.normal(size=30)})
    with pytest.warns(UserWarning, match="DataFrame column 'id' holds integers beyond 2\\*\\*53"):
        as_raw_table(frame)
    nullable = pd.DataFrame({"n": pd.array([1, None, 3] * 10, dtype="Int64"), "x": RNG.normal(size=30)})
    np.testing.assert_array_equal(as_raw_table(nullable).values[:3, 0], [1.0, np.nan, 3.0])


def test_iso_dates_become_days_and_ambiguous_dates_are_refused(tmp_path):
    rows = ["when,x"] + [f"2021-03-{1 + i % 28:02d},{i}" for i in range(40)]
    rows[5] = "1970-01-02T12:00:00Z,4"
    with pytest.warns(UserWarning, match="column 'when' holds dates: read as days since 1970-01-01"):
        table = read_table(write(tmp_path, "\n".join(rows) + "\n"))
    assert table.values[0, 0] == pytest.approx(18687.0)  # 2021-03-01
    assert table.values[4, 0] == pytest.approx(1.5) and not table.levels
    rows = ["when,x"] + [f"{1 + i % 12:02d}/04/2021,{i}" for i in range(40)]
    with pytest.raises(
        DataError, match=r":2: column 'when' holds dates such as '01/04/2021' whose day/month"
    ):
        read_table(write(tmp_path, "\n".join(rows) + "\n", "us.csv"))


def test_frame_dates_and_durations_become_days():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["1970-01-03 00:00", None, "1970-01-01 06:00"] * 10),
            "utc": pd.to_datetime(["1970-01-02T00:00:00+01:00"] * 30),
            "took": pd.to_timedelta(["36h", "1D", "0s"] * 10),
        }
    )
    with pytest.warns(UserWarning, match="holds dates"):
        table = as_raw_table(frame)
    np.testing.assert_allclose(table.values[:3, 0], [2.0, np.nan, 0.25])
    assert table.values[0, 1] == pytest.approx(1 - 1 / 24) and table.values[0, 2] == 1.5


# --------------------------------------------------------------------------- identifiers


def test_identifier_columns_are_dropped_with_a_message(tmp_path):
    n = 50
    rows = ['"",id,name,x,y'] + [
        f'"{i + 1}",{1000 + i},p{i:03d},{RNG.normal():.3f},{i % 4}' for i in range(n)
    ]
    path = write(tmp_path, "\n".join(rows) + "\n")
    with pytest.warns(UserWarning) as record:
        splits = load_table(read_table(path))
    assert splits.feature_names == ["x", "y"]
    messages = " ".join(str(w.message) for w in record)
    assert "column 'x0' dropped: an identifier: the consecutive integers 1..50, one per row" in messages
    assert "column 'id' dropped: an identifier: the consecutive integers 1000..1049" in messages
    assert "column 'name' dropped: an identifier: 50 distinct labels, one per row" in messages
    with pytest.raises(ConfigError, match=r"column 'name' was dropped \(an identifier: 50 distinct labels"):
        splits.columns.with_likelihoods({"name": "categorical"})


def test_distinct_integers_named_like_an_identifier_are_dropped():
    n = 40
    ids = RNG.choice(10**6, n, replace=False).astype(float)  # distinct, not consecutive
    x = np.column_stack([ids, ids, RNG.normal(size=n)])
    with pytest.warns(UserWarning, match="column 'patient_id' dropped: an identifier: named like one"):
        splits = load_table(x, names=["patient_id", "income", "z"])
    assert splits.feature_names == ["income", "z"]  # the same numbers under another name stay


def test_a_short_table_keeps_its_distinct_values():
    splits = load_table(
        np.column_stack([np.arange(10.0), RNG.normal(size=10)]), valid_fraction=0.2, test_fraction=0.2
    )
    assert splits.feature_names == ["x0", "x1"]


# --------------------------------------------------------------------------- scales


def test_reals_above_2_to_the_53_stay_real_and_train():
    x = np.column_stack([2.0**60 * (1 + RNG.uniform(0, 1, 80)), RNG.normal(size=80)])
    splits = load_table(x)
    assert [c.kind for c in splits.columns.columns] == ["real", "real"]
    assert torch.isfinite(splits.train).all() and splits.train[:, 0].std() == pytest.approx(1.0, abs=0.2)


def test_data_near_1e30_is_standardized_in_float64(tmp_path, capsys):
    x = RNG.normal(1e30, 1e29, (120, 2))
    path = tmp_path / "big.csv"
    np.savetxt(path, x, delimiter=",", header="a,b", comments="")
    splits = load_table(read_table(path))
    assert [c.kind for c in splits.columns.columns] == ["real", "real"]  # once 0s: "binary"
    assert splits.train.std(0).min() > 0.5
    np.testing.assert_allclose(splits.columns.to_raw(splits.columns.transform(x)), x, rtol=1e-6)
    vae = pyro_vae.VAE(2, 2, hidden=(8,), likelihood=splits.columns.likelihood_spec())
    pyro_vae.fit(vae, splits, epochs=1, progress=False)
    result = pyro_vae.evaluate(vae, splits, num_samples=5)
    assert np.isfinite(result["log_likelihood"])


def test_values_beyond_float32_are_refused_before_anything_is_written(tmp_path, capsys):
    rows = ["a,b"] + [f"{i * 0.37:.2f},{i % 3}.5" for i in range(40)] + ["1e300,1"]
    path = write(tmp_path, "\n".join(rows) + "\n")
    code = main(["train", "--dataset", "csv", "--data-path", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "column 'a' of t: values up to 1e+300 do not fit in float32" in err
    assert not (tmp_path / "run").exists()


def test_the_cli_reads_a_semicolon_file_with_a_bom_and_names_the_column(tmp_path, capsys):
    path = write(tmp_path, "\ufeff" + numbers_csv(sep=";"))
    out = tmp_path / "run"
    argv = ["train", "--dataset", "csv", "--data-path", str(path), "--out", str(out), "--epochs", "1"]
    argv += [
        "--hidden",
        "8",
        "--eval-samples",
        "2",
        "--no-progress",
        "--column-likelihoods",
        '{"a": "laplace"}',
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    report = capsys.readouterr().out
    assert "column  'a': real" in report and "laplace (given)" in report and "'c': count" in report
