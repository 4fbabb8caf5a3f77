"""`pyro-vae compare` and `pyro_vae.app.compare`: one VAE per prior, the tables and the figures."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from pyro_vae.app.cli import main
from pyro_vae.app.compare import (
    COLUMNS,
    FIGURES,
    TABLES,
    aggregate_posterior_log_prob,
    compare_priors,
    default_config,
    elpd_data,
    paired_differences,
    plot_latent_panels,
    resolve_priors,
)
from pyro_vae.app.config import RunConfig
from pyro_vae.app.run import load_data
from pyro_vae.distributions import priors
from pyro_vae.infer.training import History, TrainingDiverged

TINY = ["--epochs", "2", "--hidden", "16", "--eval-samples", "20", "--num-threads", "1", "--no-progress"]


def tiny_config() -> RunConfig:
    cfg = default_config().replace("model", hidden=[16])
    return cfg.replace("train", epochs=3, patience=None, num_threads=1).replace("eval", num_samples=50)


def markdown_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return [
        dict(zip(header, (c.strip().strip("*") for c in line.strip("|").split(" | ")))) for line in lines[1:]
    ]


def check_outputs(out, rows_expected: int) -> tuple[list[dict], dict]:
    """Every file is there, and the CSV, JSON and Markdown tables say the same."""
    for name in (*TABLES, *FIGURES):
        assert (out / name).is_file(), name
    for name in FIGURES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "comparison.json").read_text())
    rows = report["rows"]
    assert report["complete"] and len(rows) == rows_expected
    with (out / "comparison.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["prior"] for r in csv_rows] == [r["prior"] for r in rows]
    assert list(csv_rows[0]) == list(COLUMNS)
    md_rows = markdown_rows((out / "comparison.md").read_text())
    assert [r["prior"] for r in md_rows] == [r["prior"] for r in rows]
    md_columns = {
        "test log p(x)": "log_likelihood",
        "ELBO": "elbo",
        "KL": "kl",
        "reconstruction": "reconstruction",
    }
    for row, c, m in zip(rows, csv_rows, md_rows):
        for key in ("log_likelihood", "elbo", "kl", "reconstruction", "train_seconds"):
            if row[key] is None:
                assert c[key] == ""
            else:
                assert float(c[key]) == row[key]
        for header, key in md_columns.items():
            if row[key] is None:
                assert m[header] == "—"
            else:
                assert float(m[header]) == pytest.approx(row[key], abs=0.0051)
        if row["error"] is None:
            if sum(r["error"] is None for r in rows) > 1:
                assert row["diff_to_best"] <= 0 and row["diff_to_best_se"] >= 0
                assert float(m["− best"]) == pytest.approx(row["diff_to_best"], abs=0.0051)
                assert float(c["diff_to_best_se"]) == row["diff_to_best_se"]
            assert m["active units"] == f"{row['active_units']}/{row['latent_dim']}"
            # the importance-sampled bound is above the ELBO, up to Monte Carlo error
            assert row["elbo"] <= row["log_likelihood"] + 0.2
            assert row["reconstruction"] - row["kl"] == pytest.approx(row["elbo"], abs=1e-4)
            assert (out / "runs" / row["run_dir"].split("/")[-1] / "metrics.json").is_file()
    return rows, report


def test_compare_writes_every_table_and_figure_and_survives_a_failing_prior(tmp_path, monkeypatch, capsys):
    import pyro_vae.app.compare as compare

    real_train_run = compare.train_run

    def train_run(cfg, out, **kwargs):
        if cfg.model.prior == "laplace":
            raise TrainingDiverged("the loss became nan at epoch 1, step 0; training stopped.", History())
        return real_train_run(cfg, out, **kwargs)

    monkeypatch.setattr(compare, "train_run", train_run)
    cfg = tiny_config()
    out = tmp_path / "cmp"
    result = compare_priors(
        cfg, ["standard_normal", "laplace", "mixture", "normal"], out, normal_scales=[2], progress=False
    )
    printed = capsys.readouterr().out
    assert printed.count("] ") >= 4 and "failed" in printed and "| mixture |" in printed

    rows, report = check_outputs(out, 4)
    assert [r["prior"] for r in rows] == ["standard_normal", "laplace", "mixture", "normal(scale=2)"]
    assert [r.entry.label for r in result.failed] == ["laplace"]
    failed = rows[1]
    assert failed["error"].startswith("TrainingDiverged") and failed["log_likelihood"] is None
    assert "TrainingDiverged" in (out / "comparison.md").read_text()
    assert (out / "comparison.md").read_text() == result.markdown()
    # the same budget, seed and networks for every prior, recorded with the table
    assert report["seed"] == 0 and report["budget"]["epochs"] == 3 and report["networks"]["hidden"] == [16]
    assert report["evaluation"] == {"split": "test", "num_samples": 50}
    assert {r["epochs"] for r in rows if r["error"] is None} == {3}
    # each run directory repeats its run: the base config with only the prior changed
    run = RunConfig.from_json(out / "runs" / "normal_scale2")
    assert run.model.prior == "normal" and run.model.prior_options == {"scale": 2.0}
    run.model.prior, run.model.prior_options = cfg.model.prior, cfg.model.prior_options
    # the default batch size is fixed from the data once, for every run (and recorded)
    assert run.train.batch_size == report["budget"]["batch_size"] == len(load_data(cfg).train) // 10
    assert run.to_dict() == cfg.replace("train", batch_size=run.train.batch_size).to_dict()
    saved = json.loads((out / "runs" / "mixture" / "config.json").read_text())
    assert saved["model"]["prior"]["name"] == "mixture" and saved["model"]["latent_dim"] == 2


def test_cli_compares_every_registered_prior(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    names = priors.names()
    expected = len(names) - 1 + 3  # 'normal' runs at its three default scales
    rows, report = check_outputs(out, expected)
    assert {r["name"] for r in rows} == set(names)
    assert [r["options"]["scale"] for r in rows if r["name"] == "normal"] == [0.5, 2.0, 5.0]
    assert len({p.name for p in (out / "runs").iterdir()}) == expected
    assert all(f"[{i}/{expected}]" in printed for i in range(1, expected + 1))
    assert report["budget"]["epochs"] == 2 and report["base_config"]["model"]["latent_dim"] == 2
    # The tables say which command produced them.
    assert report["command"].startswith("pyro-vae compare --out ")
    assert f"Produced by `{report['command']}`" in (out / "comparison.md").read_text()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--priors", "standard_normal,gaussian_mixture"], "Choose one of: " + ", ".join(priors.names())),
        (["--priors", "normal", "--normal-scales", "0.5,-1"], "must be positive"),
        (["--priors", "mixture", "--normal-scales", "2"], "'normal' is not among the priors"),
        (["--priors", "mixture,mixture"], "listed twice"),
        (["--epochs", "0"], "train.epochs must be at least 1"),
    ],
)
def test_cli_rejects_bad_input_before_training(tmp_path, capsys, args, match):
    assert main(["compare", "--out", str(tmp_path / "cmp"), "--no-progress", *args]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "cmp" / "runs").exists()


def test_resolve_priors_expands_normal_and_takes_specs():
    entries = resolve_priors(["normal", {"name": "mixture", "options": {"num_components": 3}}], [0.5, 5])
    assert [e.label for e in entries] == ["normal(scale=0.5)", "normal(scale=5)", "mixture(num_components=3)"]
    assert [e.slug for e in entries] == ["normal_scale0.5", "normal_scale5", "mixture_num_components3"]
    assert [e.label for e in resolve_priors(["normal"], [])] == ["normal"]
    assert [e.spec["name"] for e in resolve_priors()] == sorted(
        [n for n in priors.names() if n != "normal"] + ["normal"] * 3
    )
    with pytest.raises(ValueError, match="num_components"):
        resolve_priors([{"name": "mixture", "options": {"num_components": 0}}])
    with pytest.raises(ValueError, match="no priors"):
        resolve_priors([])


def test_aggregate_posterior_is_the_mixture_of_the_posteriors():
    loc = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    scale = torch.tensor([[1.0, 0.5], [0.3, 2.0]])
    z = torch.randn(7, 2)
    expected = torch.logsumexp(
        torch.stack([torch.distributions.Normal(m, s).log_prob(z).sum(-1) for m, s in zip(loc, scale)]), 0
    ) - math.log(2)
    torch.testing.assert_close(aggregate_posterior_log_prob(loc, scale, z), expected)
    # a density: it integrates to one over a grid that covers it
    axis = torch.linspace(-8, 10, 301)
    grid = torch.cartesian_prod(axis, axis)
    mass = aggregate_posterior_log_prob(loc, scale, grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_a_latent_of_more_than_two_dimensions_is_shown_in_principal_components(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--out", str(out), *TINY, "--latent-dim", "3", "--priors", "standard_normal"]
    assert main(args) == 0
    report = json.loads((out / "comparison.json").read_text())
    assert report["figures"] == ["samples.png", "latent_means.png", "kl_per_dim.png"]
    assert not (out / "prior_vs_aggregate_posterior.png").exists()
    assert "prior_vs_aggregate_posterior" not in (out / "comparison.md").read_text()
    assert len(report["rows"][0]["options"]) == 0 and report["networks"]["latent_dim"] == 3
    fig = plot_latent_panels(["a", "b"], [torch.randn(50, 3), None], torch.arange(50) % 10)
    assert "first two principal components" in fig._suptitle.get_text()


def test_paired_differences_are_the_mean_and_standard_error_of_pointwise_differences():
    """Three models scored on the same 400 points; the hand computation: d_i = log p_A(x_i) -
    log p_best(x_i), mean(d), and sd(d) / sqrt(n) with the population sd (ddof 0, as ArviZ)."""
    g = np.random.default_rng(0)
    n = 400
    shared = g.normal(-90, 20, n)  # the points' difficulty, common to every model
    scores = {
        "a": shared + g.normal(0, 0.5, n),
        "b": shared - 0.3 + g.normal(0, 0.5, n),
        "c": shared - 1.0 + g.normal(0, 2.0, n),
    }
    paired = paired_differences(scores)
    best = max(scores, key=lambda k: scores[k].mean())
    assert best == "a" and paired["a"] == {"diff_to_best": 0.0, "diff_to_best_se": 0.0}
    assert f"{paired['a']['diff_to_best']:.2f}" == "0.00"  # not "-0.00" in the table
    for name in ("b", "c"):
        d = scores[name] - scores[best]
        assert paired[name]["diff_to_best"] == pytest.approx(d.mean(), rel=1e-12)
        assert paired[name]["diff_to_best_se"] == pytest.approx(d.std() / math.sqrt(n), rel=1e-12)
        # the paired error is far below each model's own, which the shared difficulty dominates
        assert paired[name]["diff_to_best_se"] < 0.2 * scores[name].std() / math.sqrt(n)
    e = elpd_data(scores["b"])
    assert e["elpd_loo"] == pytest.approx(scores["b"].sum()) and e["n_data_points"] == n
    with pytest.raises(ValueError, match="same points"):
        paired_differences({"a": scores["a"], "short": scores["b"][:10]})


@pytest.mark.parametrize("threads, text", [(1, ", 1 thread"), (2, ", 2 threads")])
def test_the_report_names_its_thread_count(threads, text):
    from pyro_vae.app import compare as compare_module

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert compare_module._machine().endswith(text)
    finally:
        torch.set_num_threads(before)
