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
