"""The examples run from a fresh install (short settings)."""

import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quickstart_example_runs():
    metrics = load(ROOT / "examples" / "quickstart.py").main(epochs=3)
    assert metrics["num_points"] == 270 and metrics["elbo"] <= metrics["log_likelihood"] + 1.0
    assert 0 < metrics["bits_per_dim"] < 8


def committed_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kl_weighting_quick_run_writes_a_temporary_folder_never_docs(tmp_path, monkeypatch, capsys):
    module = load(ROOT / "examples" / "kl_weighting.py")
    before = committed_files(ROOT / "docs")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp puts the run
    results = module.main(["--quick"])
    assert committed_files(ROOT / "docs") == before  # the committed page and figures untouched
    (out,) = tmp_path.glob("kl_weighting_quick_*")
    assert str(out / "kl_weighting.md") in capsys.readouterr().out  # says where it wrote
    with pytest.raises(SystemExit):
        module.main(["--quick", "--out", str(ROOT / "docs")])
    assert committed_files(ROOT / "docs") == before
    page = (out / "kl_weighting.md").read_text()
    for name in ("averaged_vs_summed.png", "warmup.png", "results.json"):
        assert (out / "kl_weighting" / name).stat().st_size > 0, name
        assert f"kl_weighting/{name}" in page, name
    assert "nan" not in page.lower()
    # The identities hold to float precision even in a smoke run.
    assert max(r["abs_diff"] for r in results["beta"]["identity"]) < 1e-3
    assert max(r["grad_relative_difference"] for r in results["lambda"]["rows"]) < 1e-4
    assert results["averaging"]["identity"]["abs_diff"] < 1e-3
    for t in results["priors"]["terms"]:
        assert abs(t["difference"] - t["predicted_difference"]) < 1e-4
    assert f"{results['lambda']['rows'][0]['sigma']:.4g}" in page


def test_compare_priors_example_runs_quick(tmp_path):
    out = tmp_path / "compare"
    argv = ["--quick", "--out", str(out), "--priors", "standard_normal,vamp,normal", "--normal-scales", "2"]
    argv += ["--num-threads", "1"]
    result = load(ROOT / "examples" / "compare_priors.py").main(argv)
    assert [r.entry.label for r in result.results] == ["standard_normal", "vamp", "normal(scale=2)"]
    assert not result.failed and (out / "comparison.md").is_file() and (out / "samples.png").is_file()
    for row in result.rows:
        assert row["epochs"] == 10 and row["elbo"] <= row["log_likelihood"] + 0.5


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


def test_custom_networks_example_runs_quick_into_its_out_folder(tmp_path):
    before = committed_files(ROOT / "examples")
    result = load(ROOT / "examples" / "custom_networks.py").main(["--quick", "--out", str(tmp_path)])
    assert committed_files(ROOT / "examples") == before
    metrics, reloaded = result["metrics"], result["reloaded"]
    assert metrics["log_likelihood"] >= metrics["elbo"]
    assert reloaded["log_likelihood"] == pytest.approx(metrics["log_likelihood"], abs=1e-4)
    assert {"reconstructions.png", "samples.png", "model"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "model" / "config.json").is_file() and len(result["history"]) == 2
