"""Runs describe themselves truthfully: ``--resume`` refuses changed settings and ``evaluate``
refuses a table unlike the run's.

``train --resume`` with another model, data or training setting would keep training the saved
model and write the new settings into ``config.json``; it is refused with every difference
named, and nothing is written. ``--epochs`` and ``--max-minutes`` may change the run's budget
(``--epochs`` no fewer than it has trained), recorded in ``config.json`` under ``"resumes"``. ``evaluate`` (and ``load_run``) read a
table run's CSV again: its columns' names, order, kinds and levels must be the run's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.app import cli
from pyro_vae.app.config import (
    RESUME_BUDGETS,
    RESUME_MAY_CHANGE,
    RunConfig,
    SettingChange,
    check_columns,
    check_resume,
    check_trained,
    flag_of,
    setting_changes,
)
from pyro_vae.app.run import evaluate_run, load_run
from pyro_vae.errors import ResumeError, SchemaError
from tests.test_faults import run_cli, snapshot

SMALL = ["--epochs", "2", "--hidden", "16", "--eval-samples", "5", "--no-progress", "--num-threads", "1"]


def saved_config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# ----------------------------------------------------------------------------- the rules, no training


def test_every_refused_setting_is_listed_with_its_flag_and_both_values() -> None:
    saved = RunConfig()
    given = (
        saved.replace("model", hidden=[32], likelihood="gaussian", prior="vamp")
        .replace("train", seed=3, batch_size=8)
        .replace("data", dataset="csv", path="other.csv")
    )
    with pytest.raises(ResumeError) as info:
        check_resume(saved, given, "run/config.json")
    message = str(info.value)
    assert "run/config.json" in message and "7 setting(s) differ" in message
    for line in (
        "model.hidden (--hidden): saved null, given [32]",
        'model.likelihood (--likelihood): saved "auto", given "gaussian"',
        'model.prior (--prior): saved "standard_normal", given "vamp"',
        "train.seed (--seed): saved 0, given 3",
        "train.batch_size (--batch-size): saved null, given 8",
        'data.dataset (--dataset): saved "digits", given "csv"',
        'data.path (--data-path): saved null, given "other.csv"',
    ):
        assert line in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "saved", "given", "allowed"),
    [
        ("train.epochs", 10, 20, True),
        ("train.epochs", 10, 10, None),  # no change
        ("train.epochs", 10, 5, True),  # to finish early (not below the epochs trained: check_trained)
        ("train.max_minutes", 5.0, 10.0, True),
        ("train.max_minutes", 5.0, None, True),
        ("train.max_minutes", None, 5.0, True),
        ("train.num_threads", None, 2, True),
        ("eval.num_samples", 1000, 5000, True),
        ("train.lr", 1e-3, 2e-3, False),
        ("train.patience", 50, None, False),
    ],
)
def test_budgets_and_where_it_runs_may_change_nothing_else(key, saved, given, allowed) -> None:
    section, name = key.split(".")
    old = RunConfig().replace(section, **{name: saved})
    new = old.replace(section, **{name: given})
    changes = setting_changes(old, new)
    if allowed is None:
        assert changes == [] and check_resume(old, new, "c") == []
        return
    assert changes == [SettingChange(key, saved, given)]
    if allowed:
        assert check_resume(old, new, "c") == changes
    else:
        with pytest.raises(ResumeError, match=re.escape(key)):
            check_resume(old, new, "c")


def test_the_epoch_budget_is_no_fewer_than_the_epochs_trained() -> None:
    cfg = RunConfig().replace("train", epochs=5)
    check_trained(cfg, 5, "runs/r")
    with pytest.raises(
        ResumeError, match=r"train\.epochs \(--epochs\) 5 is fewer than the 6 epochs .* runs/r"
    ):
        check_trained(cfg, 6, "runs/r")


def test_the_listed_settings_exist_and_their_flags_are_the_command_lines() -> None:
    train = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["train"]
    flags = {a.dest: a.option_strings for a in train._actions}
    for key in RESUME_MAY_CHANGE | RESUME_BUDGETS | {"model.hidden", "data.path", "train.seed"}:
        assert flag_of(key) in flags[key], key


# ----------------------------------------------------------------------------- train --resume


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One small finished digits run (2 epochs), trained once; tests copy it."""
    out = tmp_path_factory.mktemp("shared") / "run"
    assert cli.main(["train", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


CHANGES = {
    "hidden": (["--hidden", "32"], "model.hidden (--hidden): saved [16], given [32]"),
    "likelihood": (
        ["--likelihood", "gaussian"],
        'model.likelihood (--likelihood): saved "auto", given "gaussian"',
    ),
    "prior": (["--prior", "vamp"], 'model.prior (--prior): saved "standard_normal", given "vamp"'),
    "seed": (["--seed", "1"], "train.seed (--seed): saved 0, given 1"),
    "batch-size": (["--batch-size", "8"], "train.batch_size (--batch-size): saved "),
    "data-path": (
        ["--dataset", "npy", "--data-path", "x.npy"],
        'data.path (--data-path): saved null, given "x.npy"',
    ),
    "below-trained": (["--epochs", "1"], "train.epochs (--epochs) 1 is fewer than the 2 epochs the run"),
    "data-seed": (["--data-seed", "4"], "data.seed (--data-seed): saved 0, given 4"),
}


@pytest.mark.parametrize(("flags", "line"), list(CHANGES.values()), ids=list(CHANGES))
def test_resume_refuses_a_changed_setting_and_writes_nothing(flags, line, run, capsys) -> None:
    before = snapshot(run.parent)
    code, err = run_cli(["train", "--resume", "--out", run, *SMALL, *flags], capsys)
    assert code == 2, err
    assert err.startswith("pyro-vae: error: ") and line in err, err
    assert snapshot(run.parent) == before  # config.json untouched, no partial copy


def test_resume_lists_every_difference_in_one_message(run, capsys) -> None:
    flags = [
        "--hidden",
        "32",
        "--likelihood",
        "gaussian",
        "--prior",
        "vamp",
        "--seed",
        "2",
        "--batch-size",
        "8",
    ]
    code, err = run_cli(["train", "--resume", "--out", run, *SMALL, *flags], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "5 setting(s) differ" in err
    for key in ("model.hidden", "model.likelihood", "model.prior", "train.seed", "train.batch_size"):
        assert key in err


def test_a_longer_run_is_recorded_as_an_extension(run, capsys) -> None:
    first = saved_config(run)
    code, err = run_cli(["train", "--resume", "--out", run, *SMALL[2:], "--epochs", "4"], capsys)
    assert code == 0, err
    cfg = saved_config(run)
    assert cfg["run"]["train"]["epochs"] == 4
    assert cfg["resumes"] == [{"after_epoch": 2, "changes": {"train.epochs": {"saved": 2, "given": 4}}}]
    assert {k: v for k, v in cfg["run"].items() if k != "train"} == {
        k: v for k, v in first["run"].items() if k != "train"
    }
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4
    assert RunConfig.from_json(run).train.epochs == 4  # --config DIR/config.json repeats the longer run

    code, err = run_cli(
        ["train", "--resume", "--out", run, *SMALL[2:], "--epochs", "5", "--lr", "0.01"], capsys
    )
    assert code == 2 and "train.lr (--lr): saved 0.001, given 0.01" in err, err
    code, err = run_cli(
        ["train", "--resume", "--out", run, *SMALL[2:], "--epochs", "5", "--eval-samples", "7"], capsys
    )
    assert code == 0, err
    resumes = saved_config(run)["resumes"]
    assert len(resumes) == 2 and resumes[0]["after_epoch"] == 2 and resumes[1]["after_epoch"] == 4
    assert resumes[1]["changes"] == {
        "train.epochs": {"saved": 4, "given": 5},
        "eval.num_samples": {"saved": 5, "given": 7},
    }


def test_a_resume_with_the_same_settings_is_recorded_without_changes(run, capsys) -> None:
    code, err = run_cli(["train", "--resume", "--out", run, *SMALL], capsys)
    assert code == 0, err
    assert saved_config(run)["resumes"] == [{"after_epoch": 2, "changes": {}}]


# ----------------------------------------------------------------------------- a table's schema


def table(rows: int = 120, seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    return {
        "height": [f"{v:.2f}" for v in rng.normal(170, 10, rows)],
        "visits": [str(v) for v in rng.poisson(4, rows)],
        "colour": [["red", "green", "blue"][i % 3] for i in range(rows)],
        "weight": [f"{v:.2f}" for v in rng.normal(70, 8, rows)],
    }


def write_csv(path: Path, columns: dict[str, list[str]]) -> None:
    names = list(columns)
    lines = [",".join(names)] + [
        ",".join(columns[n][i] for n in names) for i in range(len(columns[names[0]]))
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("table")
    write_csv(root / "people.csv", table())
    assert (
        cli.main(
            [
                "train",
                "--out",
                str(root / "run"),
                *SMALL,
                "--dataset",
                "csv",
                "--data-path",
                str(root / "people.csv"),
            ]
        )
        == 0
    )
    return root


def reordered(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    return {n: columns[n] for n in ("visits", "height", "colour", "weight")}


def with_level(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    return {**columns, "colour": [c if i % 7 else "purple" for i, c in enumerate(columns["colour"])]}


def without(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    return {n: v for n, v in columns.items() if n != "weight"}


def renamed(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    return {("mass" if n == "weight" else n): v for n, v in columns.items()}


def retyped(columns: dict[str, list[str]]) -> dict[str, list[str]]:
    return {**columns, "colour": [str(i % 3) for i in range(len(columns["colour"]))]}


TABLES = {
    "reordered": (reordered, "column 'height' is column 2 here, 1 in the run's table"),
    "new-level": (with_level, "column 'colour' has levels"),
    "missing-column": (without, "column 'weight' is missing"),
    "renamed-column": (renamed, "column 'weight' is missing; column 'mass' is not in the run's table"),
}


@pytest.fixture
def table_copy(table_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(table_run, tmp_path / "t")
    # the run's config names the CSV by its absolute path: point it at this copy
    cfg = saved_config(tmp_path / "t" / "run")
    cfg["run"]["data"]["path"] = str(tmp_path / "t" / "people.csv")
    (tmp_path / "t" / "run" / "config.json").write_text(json.dumps(cfg))
    return tmp_path / "t"


def test_evaluate_on_the_runs_own_table_works(table_copy, capsys) -> None:
    code, err = run_cli(["evaluate", table_copy / "run", "--no-progress"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(("change", "text"), list(TABLES.values()), ids=list(TABLES))
def test_evaluate_refuses_a_table_unlike_the_runs_and_names_the_column(change, text, table_copy, capsys):
    write_csv(table_copy / "people.csv", change(table()))
    before = snapshot(table_copy)
    code, err = run_cli(["evaluate", table_copy / "run", "--no-progress"], capsys)
    assert code == 2, err
    assert err.startswith("pyro-vae: error: the table in ") and text in err, err
    assert "Give the run's columns, in its order: height, visits, colour, weight" in err
    assert snapshot(table_copy) == before
    with pytest.raises(SchemaError, match=re.escape(text)):
        evaluate_run(table_copy / "run", progress=False, echo=lambda *a: None)


def test_resume_refuses_a_table_unlike_the_runs(table_copy, capsys) -> None:
    write_csv(table_copy / "people.csv", reordered(table()))
    before = snapshot(table_copy)
    code, err = run_cli(["train", "--resume", "--out", table_copy / "run", *SMALL], capsys)
    assert code == 2 and "column 'height' is column 2 here" in err, err
    assert snapshot(table_copy) == before


def test_load_run_checks_the_schema_too(table_copy) -> None:
    load_run(table_copy / "run")
    write_csv(table_copy / "people.csv", without(table()))
    with pytest.raises(SchemaError, match="column 'weight' is missing"):
        load_run(table_copy / "run")


def schema(names, columns, dropped=()) -> dict:
    return {"source_names": list(names), "columns": list(columns), "dropped": list(dropped)}


def col(name, kind="real", levels=None, values=None) -> dict:
    return {"name": name, "kind": kind, "levels": levels, "values": values}


def test_check_columns_compares_kinds_levels_and_what_is_kept() -> None:
    saved = schema("abc", [col("a"), col("b", "categorical", levels=["x", "y"]), col("c", "count")])
    check_columns(saved, saved, "t.csv")
    check_columns(None, saved, "t.csv")  # a run that saved no schema: nothing to check
    with pytest.raises(SchemaError, match="t.csv is not a table"):
        check_columns(saved, None, "t.csv")
    kinds = schema("abc", [col("a", "count"), col("b", "categorical", levels=["x", "y"]), col("c", "count")])
    with pytest.raises(SchemaError, match="column 'a' is count here, real in the run's table"):
        check_columns(saved, kinds, "t.csv")
    levels = schema("abc", [col("a"), col("b", "categorical", levels=["x", "z"]), col("c", "count")])
    with pytest.raises(SchemaError, match=re.escape("column 'b' has levels ['x', 'z'] here, ['x', 'y']")):
        check_columns(saved, levels, "t.csv")
    dropped = schema(
        "abc", [col("a"), col("b", "categorical", levels=["x", "y"])], [{"name": "c", "reason": "constant"}]
    )
    with pytest.raises(
        SchemaError, match=re.escape("column 'c' is dropped here (constant); the run models it")
    ):
        check_columns(saved, dropped, "t.csv")
    moved = schema("cab", saved["columns"])
    with pytest.raises(SchemaError) as info:
        check_columns(saved, moved, "t.csv")
    assert "column 'a' is column 2 here, 1 in the run's table" in str(info.value)
    assert "column 'c' is column 1 here, 3 in the run's table" in str(info.value)


@pytest.mark.parametrize("columns", [{"foo": 1}, {"source_names": ["a"], "columns": [5]}, [1, 2]])
def test_a_damaged_columns_section_is_named_not_an_internal_error(columns, table_copy, capsys) -> None:
    cfg = saved_config(table_copy / "run")
    cfg["columns"] = columns
    (table_copy / "run" / "config.json").write_text(json.dumps(cfg))
    code, err = run_cli(["evaluate", table_copy / "run", "--no-progress"], capsys)
    assert code == 2, err
    assert "config.json: its 'columns' section does not describe a table" in err, err


def test_a_damaged_resumes_entry_is_named(run, capsys) -> None:
    cfg = saved_config(run)
    cfg["resumes"] = 3
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run.parent)
    code, err = run_cli(["train", "--resume", "--out", run, *SMALL], capsys)
    assert code == 2 and "'resumes' must be a list" in err, err
    assert snapshot(run.parent) == before
