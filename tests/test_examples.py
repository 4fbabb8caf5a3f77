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


def test_arviz_diagnostics_example_runs(tmp_path):
    import numpy as np

    result = load(ROOT / "examples" / "arviz_diagnostics.py").main(quick=True, out=tmp_path)
    assert {"diagnostics.nc", "khat.png", "nuts_overlay.png", "ppc.png"} <= {
        p.name for p in tmp_path.iterdir()
    }
    idata, psis, nuts = result["idata"], result["psis"], result["nuts"]
    assert idata.posterior["z"].shape == (1, 200, 30, 2) and "label" in idata.posterior.coords
    assert psis.khat.shape == (30,) and 0 <= psis.share_above(0.7) <= 1
    # evaluate and the PSIS diagnostic saw the same draws
    assert abs(np.mean(psis.log_px_is) - result["metrics"]["log_likelihood"]) < 1e-4
    assert nuts.index[0] == psis.worst(1)[0]["index"]
    assert np.isfinite(nuts.r_hat).all() and np.isfinite(nuts.amortization_gap).all()
