"""The main job, `pyro-vae train` and `pyro-vae evaluate`, end to end."""

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from pyro_vae import VAE
from pyro_vae.app.cli import main
from pyro_vae.app.run import FIGURES, read_pointwise
from pyro_vae.infer.training import HISTORY_COLUMNS

FAST = ["--epochs", "3", "--hidden", "32", "--latent-dim", "2", "--eval-samples", "20", "--no-progress"]


def test_train_writes_every_file_and_evaluate_reproduces_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "continuous_bernoulli" in printed and "log p(x)" in printed and "bits/dim" in printed
    expected = {"config.json", "model.pt", "metrics.json", "history.csv", *FIGURES}
    assert expected <= {p.name for p in out.iterdir()}
    for name in FIGURES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "log_likelihood",
        "elbo",
        "kl",
        "reconstruction",
        "active_units",
        "kl_per_dim",
        "bits_per_dim",
    ):
        assert key in metrics
    assert metrics["elbo"] <= metrics["log_likelihood"] + 0.5
    assert metrics["training"]["epochs"] == 3
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and tuple(rows[0]) == HISTORY_COLUMNS
    vae = VAE.load(out)
    assert vae.likelihood.name == "continuous_bernoulli"

    result_file = tmp_path / "again.json"
    assert main(["evaluate", str(out), "--no-progress", "--output", str(result_file)]) == 0
    again = json.loads(result_file.read_text())
    assert again["log_likelihood"] == pytest.approx(metrics["log_likelihood"], abs=1e-4)

    pointwise = read_pointwise(out)  # each test point's log p(x), for paired comparisons
    assert str(pointwise["split"]) == "test"
    assert pointwise["log_likelihood"].shape == (metrics["num_points"],)
    assert pointwise["log_likelihood"].mean() == pytest.approx(metrics["log_likelihood"], abs=1e-4)

    ais_file = tmp_path / "ais.json"
    flags = ["--method", "ais", "--ais-steps", "5", "--ais-chains", "2", "--output", str(ais_file)]
    assert main(["evaluate", str(out), "--no-progress", *flags]) == 0
    assert "by AIS (T=5, 2 chains" in capsys.readouterr().out
    ais = json.loads(ais_file.read_text())
    assert ais["method"] == "ais" and ais["ais_steps"] == 5 and ais["ais_chains"] == 2
    assert ais["log_likelihood_importance"] == pytest.approx(metrics["log_likelihood"], abs=1e-4)
    assert math.isfinite(ais["log_likelihood"]) and math.isfinite(ais["bits_per_dim"])
    assert main(["evaluate", str(out), "--method", "ais", "--ais-chains", "0"]) == 2


def test_config_file_repeats_a_run(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert (
        main(
            [
                "train",
                "--out",
                str(first),
                *FAST,
                "--prior",
                "mixture",
                "--prior-options",
                '{"num_components": 3}',
            ]
        )
        == 0
    )
    assert main(["train", "--config", str(first / "config.json"), "--out", str(second), "--no-progress"]) == 0
    m1 = json.loads((first / "metrics.json").read_text())
    m2 = json.loads((second / "metrics.json").read_text())
    assert m2["log_likelihood"] == pytest.approx(m1["log_likelihood"], abs=1e-4)
    assert (
        json.loads((second / "config.json").read_text())["model"]["prior"]["options"]["num_components"] == 3
    )


def test_every_choice_has_a_flag(tmp_path):
    out = tmp_path / "run"
    args = [
        "train", "--out", str(out), *FAST, "--likelihood", "beta", "--likelihood-options", '{"min_concentration": 0.1}',
        "--loss", "iwae", "--num-particles", "3", "--beta", "0.5", "--warmup-epochs", "2", "--lr", "0.002",
        "--batch-size", "64", "--seed", "1", "--patience", "2", "--activation", "tanh", "--eval-split", "valid",
    ]  # fmt: skip
    assert main(args) == 0
    run = json.loads((out / "config.json").read_text())
    assert run["model"]["likelihood"] == {"name": "beta", "options": {"min_concentration": 0.1}}
    assert run["run"]["train"]["loss"] == "iwae" and run["run"]["eval"]["split"] == "valid"
    history = (out / "history.csv").read_text().splitlines()
    # beta at the last of the 20 steps of each epoch (1257 points, batch 64), warming up to 0.5 over 2 epochs
    expected = [0.5 * min(1.0, (e + 19 / 20) / 2) for e in range(3)]
    beta = HISTORY_COLUMNS.index("beta")
    assert [float(r.split(",")[beta]) for r in history[1:]] == pytest.approx(expected)


def test_every_setting_is_a_flag_whose_help_shows_its_default(capsys):
    """The flags are generated from the typed settings: none is missing, each shows its default."""
    import dataclasses

    from pyro_vae.app.cli import build_parser
    from pyro_vae.app.config import SECTIONS

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    dests = {a.dest for a in parser._subparsers._group_actions[0].choices["train"]._actions}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            assert key in dests or any(d.startswith(key + ".") for d in dests), key
    assert (
        "--epochs EPOCHS epochs at most, counted from the start (also when resuming) (default 1000)" in text
    )
    assert "--beta BETA the KL weight (1: the ELBO) (default 1)" in text
    assert "--eval-samples NUM_SAMPLES importance samples per point for log p(x) (default 1000)" in text


def test_flags_override_a_config_file_and_only_the_flags_given(tmp_path):
    from pyro_vae.app.cli import build_parser, config_from_args

    cfg_path = tmp_path / "run.json"
    cfg_path.write_text(
        json.dumps({"train": {"epochs": 7, "lr": 0.01, "beta": {"end": 0.5, "warmup_epochs": 3}}})
    )
    args = build_parser().parse_args(["train", "--config", str(cfg_path), "--lr", "0.002", "--patience", "0"])
    cfg = config_from_args(args)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.patience) == (7, 0.002, None)
    assert (cfg.train.beta.end, cfg.train.beta.warmup_epochs) == (0.5, 3)  # untouched by absent --beta flags


@pytest.mark.parametrize(
    "args, match",
    [
        (["--likelihood", "bernoulli"], "continuous_bernoulli"),
        (["--dataset", "csv"], "--data-path FILE"),
        (
            ["--likelihood-options", '{"scale": -1}', "--likelihood", "gaussian_fixed"],
            "scale must be positive",
        ),
        (["--prior-options", '{"components": 3}', "--prior", "mixture"], "num_components"),
    ],
)
def test_bad_input_exits_with_a_message(tmp_path, capsys, args, match):
    assert main(["train", "--out", str(tmp_path / "x"), *FAST, *args]) == 2
    assert match in capsys.readouterr().err


def test_missing_data_directory_and_bad_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    assert main(["train", "--dataset", "mnist", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "PYRO_VAE_DATA" in capsys.readouterr().err
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"epoch": 3}}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "y")]) == 2
    assert "unknown setting" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--likelihood" in done.stdout and "--prior" in done.stdout


def test_binarized_mnist_run_on_the_shared_data(tmp_path, shared_data_dir):
    out = tmp_path / "mnist"
    args = ["train", "--dataset", "binarized_mnist", "--data-dir", str(shared_data_dir), "--out", str(out)]
    args += [
        "--epochs",
        "1",
        "--batch-size",
        "500",
        "--hidden",
        "64",
        "--latent-dim",
        "4",
        "--eval-samples",
        "2",
    ]
    assert main([*args, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_points"] == 10000 and "bits_per_dim" not in metrics
    assert -300 < metrics["log_likelihood"] < -80
    assert VAE.load(out).likelihood.name == "bernoulli"
    torch.testing.assert_close(
        torch.tensor(metrics["elbo"]), torch.tensor(metrics["log_likelihood"]), atol=10, rtol=0
    )


def test_a_csv_table_with_standardization(tmp_path):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 2, generator=g)
    x = z @ torch.randn(2, 4, generator=g) * torch.tensor([1.0, 10.0, 100.0, 0.1]) + torch.tensor(
        [0, 50, -20, 3]
    )
    table = tmp_path / "table.csv"
    rows = ["a,b,c,d,label"] + [
        ",".join(f"{v:.6g}" for v in r) + f",{int(zz > 0)}" for r, zz in zip(x.tolist(), z[:, 0])
    ]
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "csv",
        "--data-path",
        str(table),
        "--label-column",
        "label",
        "--standardize",
    ]
    assert main([*args, "--out", str(out), *FAST]) == 0
    run = json.loads((out / "config.json").read_text())
    assert run["model"]["likelihood"]["name"] == "gaussian" and len(run["preprocessing"]["std"]) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    # bits/dim are per raw feature: the standardization's Jacobian is added back
    jacobian = -sum(math.log(s) for s in run["preprocessing"]["std"])
    expected = -(metrics["log_likelihood"] + jacobian) / (4 * math.log(2))
    assert metrics["bits_per_dim"] == pytest.approx(expected)


def test_diagnose_writes_every_file_and_rejects_bad_input(tmp_path, capsys):
    import arviz as az

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *FAST]) == 0
    before = {p.name for p in run.iterdir()}
    out = tmp_path / "diagnostics"
    args = [
        "diagnose", str(run), "--num-samples", "60", "--num-points", "12", "--nuts-points", "1",
        "--nuts-warmup", "50", "--nuts-draws", "30", "--is-samples", "200", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "k-hat > 0.7" in printed and "r-hat" in printed and "log p(x) - ELBO" in printed
    expected = {"diagnostics.nc", "nuts.nc", "diagnostics.json", "khat.png", "nuts_overlay.png", "ppc.png"}
    assert {p.name for p in out.iterdir()} == expected  # and no temporary files left behind
    assert {p.name for p in run.iterdir()} == before
    for name in ("khat.png", "nuts_overlay.png", "ppc.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "diagnostics.json").read_text())
    assert report["num_points"] == 12 and report["psis"]["num_samples"] == 60
    assert set(report["psis"]["share_khat_above"]) == {"0.5", "0.7", "1.0"}
    # NUTS ran on the point with the largest k-hat
    (point,) = report["nuts"]["points"]
    assert point["index"] == report["psis"]["worst"][0]["index"]
    assert point["r_hat_max"] > 0 and point["ess_bulk_min"] > 0 and point["stuck_chains"] == 0
    assert math.isfinite(point["amortization_gap"])
    assert {"inference_data_s", "psis_s", "nuts_s", "nuts_per_point_s", "write_s"} <= set(report["timings"])
    idata = az.from_netcdf(str(out / "diagnostics.nc"))
    assert idata.posterior["z"].shape == (1, 60, 12, 2) and "label" in idata.posterior.coords
    assert az.from_netcdf(str(out / "nuts.nc")).posterior["z"].shape == (2, 30, 1, 2)

    for bad, match in [
        ([str(tmp_path / "nothing")], "does not exist"),
        ([str(tmp_path)], "not a run directory"),
        ([str(run), "--num-samples", "1"], "--num-samples (K) must be an integer >= 2"),
        ([str(run), "--num-points", "3", "--nuts-points", "5"], "cannot exceed"),
    ]:
        assert main(["diagnose", *bad, "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
        assert match in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # checked before anything is written
