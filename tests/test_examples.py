"""The examples run from a fresh install (short settings)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_example_runs():
    metrics = load(ROOT / "examples" / "quickstart.py").main(epochs=3)
    assert metrics["num_points"] == 270 and metrics["elbo"] <= metrics["log_likelihood"] + 1.0
    assert 0 < metrics["bits_per_dim"] < 8


def test_compare_priors_example_runs_quick(tmp_path):
    out = tmp_path / "compare"
    argv = ["--quick", "--out", str(out), "--priors", "standard_normal,vamp,normal", "--normal-scales", "2"]
    argv += ["--num-threads", "1"]
    result = load(ROOT / "examples" / "compare_priors.py").main(argv)
    assert [r.entry.label for r in result.results] == ["standard_normal", "vamp", "normal(scale=2)"]
    assert not result.failed and (out / "comparison.md").is_file() and (out / "samples.png").is_file()
    for row in result.rows:
        assert row["epochs"] == 10 and row["elbo"] <= row["log_likelihood"] + 0.5
