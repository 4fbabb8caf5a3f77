"""The benchmark scripts: each ``--quick`` run writes its JSON with the expected keys and finite figures.

The scripts run in subprocesses (as a person runs them), writing to a temporary results
directory so that the repository's ``benchmarks/results`` is left alone. The MNIST ones skip
without ``PYRO_VAE_DATA``.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae.infer.training import TRAINING_STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402


def run_quick(script: str, data_dir: Path, results_dir: Path, *extra: str) -> tuple[dict, str]:
    env = dict(os.environ, PYRO_VAE_DATA=str(data_dir))
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--results-dir", str(results_dir), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    path = results_dir / f"{script.removesuffix('.py')}_quick.json"
    assert path.is_file(), f"{script} wrote no {path.name}"
    assert not (results_dir / f"{script.removesuffix('.py')}.json").exists(), (
        "quick must not write full results"
    )
    return json.loads(path.read_text()), proc.stdout


def value(d: dict, dotted: str):
    for key in dotted.split("."):
        assert isinstance(d, dict) and key in d, f"missing key {key!r} of {dotted!r}"
        d = d[key]
    return d


def assert_finite(d: dict, *dotted: str, positive: bool = False) -> None:
    for name in dotted:
        v = value(d, name)
        assert isinstance(v, (int, float)) and not isinstance(v, bool), f"{name} = {v!r} is not a number"
        assert math.isfinite(v), f"{name} = {v} is not finite"
        if positive:
            assert v > 0, f"{name} = {v} is not positive"


def assert_provenance(result: dict, script: str) -> None:
    assert result["quick"] is True
    assert result["command"].startswith(f"python benchmarks/{script}") and "--quick" in result["command"]
    assert result["date"]
    assert_finite(result, "machine.cpu_count", "machine.torch_threads", positive=True)
    for key in ("torch", "processor"):
        assert value(result, f"machine.{key}")


# --------------------------------------------------------------------------- helpers (no data needed)


def test_interleave_rotates_the_order_and_drops_warmup():
    calls = []
    out = _common.interleave(
        {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, repeats=3, warmup=1
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert out == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}


def test_results_are_json_with_finite_numbers_or_null(tmp_path):
    path = _common.write_results(
        "x", True, {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": 2}}, tmp_path
    )
    assert path == tmp_path / "x_quick.json"
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": {"d": 2}}


# --------------------------------------------------------------------------- the scripts' quick modes


@pytest.mark.slow
def test_speed_quick(shared_data_dir, tmp_path):
    result, stdout = run_quick("speed.py", shared_data_dir, tmp_path)
    assert_provenance(result, "speed.py")
    assert "pyro_vae/plain" in stdout
    for b in ("32", "128", "512"):
        e = value(result, f"per_epoch.{b}")
        assert_finite(
            e,
            "pyro_vae_fit_seconds.median",
            "pyro_vae_epoch_loop_seconds.median",
            "plain_seconds.median",
            "plain_default_adam_seconds.median",
            "ratio_pyro_vae_over_plain",
            "ratio_pyro_vae_over_plain_default_adam",
            "paired_ratios_pyro_vae_over_plain.median",
            positive=True,
        )
        for phase in ("data", "forward", "backward", "optimizer_step", "total"):
            assert_finite(
                result, f"step_breakdown_ms.{b}.pyro_vae.{phase}", f"step_breakdown_ms.{b}.plain.{phase}"
            )
    assert isinstance(value(result, "target.met"), bool)
    assert value(result, "target.batch_size") == 128
    assert isinstance(result["pythae"], str)
    assert_finite(
        result,
        "pyro_forward_anatomy.pyro_tracing_overhead_ms",
        "fixed_cost_batch_size_1.pyro_fixed_cost_per_step_ms",
        "what_if.step_ms.plain",
        "what_if.step_ms.Trace_ELBO",
        "pyro_forward_anatomy.replayed_overhead_ms",
        "per_epoch_extras.validation_elbo_seconds_per_epoch",
    )
    assert_finite(
        result,
        "vamp_anatomy.milliseconds.standard_step",
        "vamp_anatomy.milliseconds.vamp_step",
        "vamp_anatomy.milliseconds.pseudo_input_encodings",
        "vamp_anatomy.milliseconds.mixture_density",
        "vamp_anatomy.vamp_over_standard",
        positive=True,
    )


@pytest.mark.slow
def test_eval_speed_quick(shared_data_dir, tmp_path):
    result, _ = run_quick("eval_speed.py", shared_data_dir, tmp_path)
    assert_provenance(result, "eval_speed.py")
    assert_finite(
        result,
        "evaluation.seconds.median",
        "evaluation.achieved_gflops",
        "evaluation.flops.total",
        "reference.torch_mm_gflops",
        "reference.decoder_linears_gflops",
        "reference.best_torch_mm_gflops",
        "efficiency.achieved_over_best_torch_mm",
        "full_run.seconds",
        positive=True,
    )
    assert_finite(result, "evaluation.log_likelihood")
    assert isinstance(value(result, "efficiency.met"), bool)
    assert "EXTRAPOLATED" in value(result, "full_run.seconds_kind")
    chunks = [k for k in result["memory_by_chunk_size"] if k.isdigit()]
    assert len(chunks) == 2
    for c in chunks:
        assert_finite(result["memory_by_chunk_size"][c], "peak_increase_mib", "microseconds_per_pair")
    # 20 points x 50 samples x (784*300 + ...) matmul work, counted exactly
    shapes = [(40, 300), (300, 300), (300, 784)]
    assert value(result, "evaluation.flops.decoder") == 2 * sum(i * o for i, o in shapes) * 20 * 50


@pytest.mark.slow
def test_likelihoods_quick(shared_data_dir, tmp_path):
    if not (shared_data_dir / "mnist.npz").is_file():
        pytest.skip("grayscale MNIST (mnist.npz) is not in PYRO_VAE_DATA")
    result, stdout = run_quick("likelihoods.py", shared_data_dir, tmp_path)
    assert_provenance(result, "likelihoods.py")
    entries = result["likelihoods"]
    assert set(entries) == {
        "gaussian",
        "gaussian_shared",
        "continuous_bernoulli",
        "beta",
        "laplace",
        "bernoulli",
    }
    for name, e in entries.items():
        assert "error" not in e, f"{name}: {e.get('error')}"
        assert_finite(
            e, "test.bits_per_dim", "test.bits_per_dim_se", "test.elbo_bits_per_dim", "evaluation_seconds"
        )
        assert value(e, "training.epochs_run") >= 1
        assert e["valid_density"] is (name != "bernoulli")
    assert "not a valid density" in entries["bernoulli"]["note"]
    assert "not a valid density" in stdout


@pytest.mark.slow
def test_networks_quick(shared_data_dir, tmp_path):
    if not (shared_data_dir / "mnist.npz").is_file():
        pytest.skip("no mnist.npz in PYRO_VAE_DATA")
    result, stdout = run_quick("networks.py", shared_data_dir, tmp_path, "--likelihoods", "beta,laplace")
    assert_provenance(result, "networks.py")
    assert set(result["runs"]) == {"beta", "laplace"}
    for name, runs in result["runs"].items():
        assert set(runs) == {"mlp", "conv"}
        for network, e in runs.items():
            assert "error" not in e, f"{network}/{name}: {e.get('error')}"
            assert e["network"] == network
            assert_finite(e, "test.bits_per_dim", "training.training_seconds", "parameters", positive=True)
    assert_finite(result, "speed.fit_epochs_per_second", "speed.plain_epochs_per_second", positive=True)
    assert "plain loop" in stdout


@pytest.mark.slow
def test_mnist_nll_quick(shared_data_dir, tmp_path):
    result, _ = run_quick("mnist_nll.py", shared_data_dir, tmp_path)
    assert_provenance(result, "mnist_nll.py")
    configs = result["configs"]
    assert set(configs) == {"standard", "mixture", "vamp", "iwae", "gated", "gated_vamp"}
    for name, e in configs.items():
        assert "error" not in e, f"{name}: {e.get('error')}"
        assert_finite(e, "test.nll", "test.nll_se", "test.elbo", "test.kl", "evaluation_seconds")
        assert_finite(e, "training.training_seconds", positive=True)
        assert isinstance(value(e, "test.active_units"), int)
        assert value(e, "training.epochs_run") >= 1
        assert isinstance(value(e, "target_check.met"), bool)
        assert "source" in e["reference"]
    assert configs["iwae"]["settings"]["num_particles"] == 50
    assert configs["vamp"]["settings"]["prior"]["name"] == "vamp"
    gated = configs["gated"]["settings"]
    assert (
        gated["network"] == "gated"
        and gated["hidden"] == [300, 300]
        and gated["prior"]["name"] == "standard_normal"
    )
    assert configs["gated"]["target_check"]["target"] == "NLL <= 88.56"
    both = configs["gated_vamp"]["settings"]
    assert both["network"] == "gated" and both["prior"]["name"] == "vamp"
    assert configs["gated_vamp"]["target_check"]["target"] == "NLL <= 85.57"
    assert not any(tmp_path.glob("**/model.pt")), "quick runs keep no models"


def test_mnist_nll_resume_continues_from_the_checkpoint(shared_data_dir, tmp_path):
    models, results = tmp_path / "models", tmp_path / "results"
    common = ("--configs", "standard", "--out-dir", str(models), "--epochs", "2")
    first, _ = run_quick("mnist_nll.py", shared_data_dir, results, *common)
    assert value(first, "configs.standard.training.epochs_run") == 2
    assert value(first, "configs.standard.training.resumed") is False
    # fit's budget counts the whole run; --max-minutes is this slice's, whatever came before
    state_file = models / "standard" / TRAINING_STATE_FILE
    state = torch.load(state_file, weights_only=True)
    state["elapsed"] = 1e6  # as if earlier slices had trained for 11 days
    torch.save(state, state_file)
    second, out = run_quick(
        "mnist_nll.py", shared_data_dir, results, *common[:-1], "4", "--resume", "--max-minutes", "5"
    )
    training = value(second, "configs.standard.training")
    assert training["resumed"] is True and training["resumed_after_epoch"] == 2
    assert training["epochs_run"] == 4  # two more, numbered on from the checkpoint
    assert training["stopped_by"] == "epochs"
    assert [s["epochs_run_in_slice"] for s in training["slices"]] == [2, 2]
    assert training["training_seconds_all_slices"] == pytest.approx(
        sum(s["training_seconds"] for s in training["slices"])
    )
    assert "--resume" in training["slices"][1]["command"]
    for s in training["slices"]:  # when, how long, and how busy the machine was
        assert s["start"] <= s["end"] and s["wall_seconds"] >= s["training_seconds"] > 0
        assert len(s["load_average_1_5_15_min_start"]) == 3 and len(s["load_average_1_5_15_min_end"]) == 3
    # A slice whose run never wrote its results is rebuilt from the checkpoint's history.
    (results / "mnist_nll_quick.json").unlink()
    third, _ = run_quick("mnist_nll.py", shared_data_dir, results, *common[:-1], "5", "--resume")
    slices = value(third, "configs.standard.training.slices")
    assert [s["epochs_run_in_slice"] for s in slices] == [4, 1]
    assert slices[0]["command"] is None and "checkpoint" in slices[0]["note"]
    assert slices[0]["training_seconds"] > 0


def test_ais_vs_is_quick(shared_data_dir, tmp_path):
    result, out = run_quick("ais_vs_is.py", shared_data_dir, tmp_path)
    assert_provenance(result, "ais_vs_is.py")
    e = result["configs"]["quick"]
    assert e["num_points"] == 10 and result["settings"]["is_samples"] == 50
    assert_finite(e, "importance.log_likelihood", "ais.log_likelihood", "ais_minus_importance.mean")
    assert_finite(e, "bdmc.lower", "bdmc.upper", "bdmc.gap_mean", "bdmc.gap_median")
    for method in ("importance", "ais", "bdmc"):
        assert_finite(e, f"{method}.seconds_per_point", positive=True)
    assert 1 <= e["ais"]["ess_mean"] <= 2 and 0 <= e["ais"]["acceptance_mean"] <= 1
    assert "BDMC on 4 simulated points" in out


def test_ddp_scaling_quick(tmp_path):
    result, out = run_quick("ddp_scaling.py", tmp_path, tmp_path)
    rows = {(r["processes"], r["batch_per_process"]): r for r in result["rows"]}
    assert set(rows) == {(1, 128), (2, 64), (2, 128)}
    assert rows[(1, 128)]["speedup_vs_1_process"] == 1.0
    for row in rows.values():
        assert_finite(row, "images_per_second", "speedup_vs_1_process", positive=True)
    assert "images/s" in out


# --------------------------------------------------------------------------- the README table


def test_readme_benchmark_table_matches_the_committed_results():
    import readme_table

    # README.md (headline rows, the KL answers) and docs/benchmarks.md (the full table)
    assert {path.name for path in readme_table.PAGES} == {"README.md", "benchmarks.md"}
    assert readme_table.main(["--check"]) == 0
    readme = (ROOT / "README.md").read_text()
    for name in ("headline", "kl_answers"):
        assert all(marker in readme for marker in readme_table.markers(name)), name


def test_headline_rows_are_rows_of_the_full_table():
    import readme_table

    full = readme_table.render().split("\n")
    headline = readme_table.render_headline().split("\n")
    assert len(headline) > 4
    # every headline row but the tables' one-row summary is the full table's own row
    rows = [row for row in headline[2:] if "real tables" not in row]
    assert len(rows) == len(headline) - 3 and all(row in full for row in rows)
    assert readme_table.render_headline(Path("/nonexistent")).count("\n") == 1


def test_kl_answers_follow_the_results_file():
    import readme_table

    results = json.loads(readme_table.KL_RESULTS.read_text())
    text = readme_table.kl_answers(results)
    assert text.count("\n* **") == 4 and results["command"] in text
    gaussian = next(r for r in results["learned_sigma"]["rows"] if r["likelihood"] == "gaussian")
    assert f"{gaussian['log_px']:.2f}" in text and "better than every" in text
    # A result that says otherwise changes the sentence, not only the number.
    gaussian["log_px"] = -1000.0
    changed = readme_table.kl_answers(results)
    assert "-1000.00" in changed and "better than every" not in changed


def test_the_sdv_row_follows_its_results_file():
    import readme_table

    results = json.loads((BENCHMARKS / "results" / "sdv.json").read_text())
    ((what, result, _, command),) = readme_table.sdv_rows(results)
    tables = results["tables"]
    ahead = sum(
        e["synthesizers"]["pyro_vae"]["quality"]
        > max(e["synthesizers"][k]["quality"] for k in ("tvae", "ctgan"))
        for e in tables.values()
    )
    assert f"**{ahead} of {len(tables)}**" in result and results["command"] in command
    # a table where pyro_vae falls behind TVAE is named, and the target reads as missed
    first = next(iter(tables))
    tables[first]["synthesizers"]["tvae"]["quality"] = 1.0
    assert f"behind on `{first}`" in readme_table.sdv_rows(results)[0][1]
    for e in tables.values():
        e["synthesizers"]["tvae"]["quality"] = e["synthesizers"]["ctgan"]["quality"] = 0.0
    assert "on every table: met" in readme_table.sdv_rows(results)[0][1]


def test_benchmark_notes_take_their_figures_from_the_results_files():
    import readme_table

    speed = json.loads((BENCHMARKS / "results" / "speed.json").read_text())
    step = "fit's step (Trace_ELBO traced once, replayed)"
    assert f"{speed['what_if']['ratio_over_plain'][step]:.2f}x the plain loop's" in readme_table.speed_note(
        speed
    )
    speed["what_if"]["ratio_over_plain"][step] = 9.87
    assert "9.87x the plain loop's" in readme_table.speed_note(speed)
    threads = json.loads((BENCHMARKS / "results" / "threads.json").read_text())
    threads["where_threads_pay"]["smallest_paying_work"] = 40_000_000
    assert "from about 4.0e7 multiply-adds" in readme_table.threads_note(threads)
    notes = (ROOT / "docs" / "benchmarks.md").read_text()
    assert all(marker in notes for marker in readme_table.markers("notes"))


def test_readme_table_refuses_a_page_without_blocks_and_writes_nothing(tmp_path, capsys):
    import readme_table

    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(f"{readme_table.BEGIN}\n{readme_table.END}\n")
    bad.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="bad.md has no block to fill"):
        readme_table.main(["--write", str(good), str(bad)])
    assert good.read_text() == f"{readme_table.BEGIN}\n{readme_table.END}\n"


def test_readme_table_check_catches_a_stale_table(tmp_path, capsys):
    import readme_table

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_table.BEGIN}\n| old | table |\n{readme_table.END}\nafter\n")
    assert readme_table.main(["--check", str(readme)]) == 1
    assert "stale" in capsys.readouterr().out
    assert readme_table.main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "| old |" not in text
    assert readme_table.main(["--check", str(readme)]) == 0
    # Without results only the header is left.
    assert readme_table.render(tmp_path).count("\n") == 1


def test_readme_rows_of_merged_entries_show_their_own_threads():
    """A results file merges entries from several runs; its top-level count is the last run's."""
    import readme_table

    results = json.loads((BENCHMARKS / "results" / "mnist_nll.json").read_text())
    results["torch_threads"] = 7
    rows = {row[0]: row[2] for row in readme_table.mnist_nll_rows(results)}
    for name, e in results["configs"].items():
        if "test" in e:
            threads = e["run"].get("torch_threads")
            expected = "threads not recorded" if threads is None else f"{threads} thread"
            assert expected in rows[readme_table.MNIST_WHAT[name]]
            assert "7 threads" not in rows[readme_table.MNIST_WHAT[name]]
    results = json.loads((BENCHMARKS / "results" / "ais_vs_is.json").read_text())
    results["torch_threads"] = 7
    names = [name for name in readme_table.AIS_WHAT if name in results["configs"]]  # the rows' order
    for row, name in zip(readme_table.ais_vs_is_rows(results), names, strict=True):
        threads = results["configs"][name].get("torch_threads")
        assert ("threads not recorded" if threads is None else f"{threads} thread") in row[2]
        assert "7 threads" not in row[2]


@pytest.mark.slow
def test_threads_quick(tmp_path):
    result, _ = run_quick("threads.py", None, tmp_path)
    assert_provenance(result, "threads.py")
    for row in result["where_threads_pay"]["rows"]:
        assert_finite(row, "work", "ms_1_thread", "speedup", positive=True)
    runs = result["contention"]["runs"]
    assert {"policy_idle", "policy_busy", "1_threads_idle", "1_threads_busy"} <= set(runs)
    for run in runs.values():
        assert run["epochs"] == 3 and run["wall_seconds"] > 0 and run["threads"]
    assert isinstance(result["contention"]["met"], bool)


def test_tables_quick(tmp_path):
    pytest.importorskip("statsmodels")
    pytest.importorskip("palmerpenguins")
    result, stdout = run_quick("tables.py", tmp_path, tmp_path)
    assert_provenance(result, "tables.py")
    assert set(result["tables"]) == {"iris", "penguins"}
    assert result["tables"]["penguins"]["missing_cells"] > 0
    for entry in result["tables"].values():
        s = entry["summary"]
        for method in ("gmm_full", "gmm_diag", "factor_analysis", "kde", "pyro_vae"):
            assert_finite(s, f"log_px.{method}")
        for method in ("mean", "iterative", "knn", "pyro_vae"):
            assert_finite(s, f"rmse.{method}", positive=True)


def test_defaults_quick(tmp_path):
    result, _ = run_quick("defaults.py", tmp_path, tmp_path)
    assert_provenance(result, "defaults.py")
    assert set(result["entries"]) == {"iris/0/default", "iris/0/batch128"}
    for entry in result["entries"].values():
        assert_finite(entry, "test_log_px", "valid_log_px", "best_valid_bound")
        assert entry["command"] == result["command"]
    assert set(result["summary"]) == {"default", "batch128"}
