r"""Raw tables: per-column preprocessing and likelihoods, missing cells, imputation.

Closed forms: a standardized Gaussian's log-density in raw units; a mixed model's ELBO
term by term; the marginal of the observed coordinates of a linear-Gaussian model,
:math:`x_o \sim \mathcal N(b_o, W_o W_o^\top + \Psi_o)`, and its conditional mean
:math:`\mathbb E[x_m \mid x_o] = b_m + \Sigma_{mo}\Sigma_{oo}^{-1}(x_o - b_o)`.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.nn import functional as F

import pyro_vae
from pyro_vae import description
from pyro_vae.app.cli import main
from pyro_vae.data.tables import load_table, read_table
from pyro_vae.distributions import likelihoods
from pyro_vae.errors import ConfigError, DataError

D, L = 5, 2


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


# --------------------------------------------------------------------------- preprocessing


def mixed_frame(n=200, seed=0):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(5e4, 1e4, n),
            "smoker": rng.integers(0, 2, n),
            "visits": rng.poisson(3, n),
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "share": rng.uniform(0.05, 0.95, n),
            "const": np.full(n, 7.0),
        }
    )
    frame.loc[rng.choice(n, 15, replace=False), "income"] = np.nan
    frame.loc[rng.choice(n, 5, replace=False), "city"] = None
    return frame


def test_each_column_gets_a_kind_a_transform_and_a_likelihood_and_constants_are_dropped():
    with pytest.warns(UserWarning, match="'const' dropped: constant"):
        splits = load_table(mixed_frame(), seed=0)
    cols = {c.name: c for c in splits.columns.columns}
    assert splits.feature_names == ["income", "smoker", "visits", "city", "share"]
    assert [cols[n].kind for n in splits.feature_names] == ["real", "binary", "count", "categorical", "unit"]
    assert [cols[n].likelihood_name for n in splits.feature_names] == [
        "gaussian", "bernoulli", "negative_binomial", "categorical", "beta"
    ]  # fmt: skip
    assert cols["city"].levels == ["oslo", "paris", "rome"] and cols["income"].standardize
    train = splits.train
    assert abs(float(train[:, 0].nanmean())) < 1e-4  # standardized with training statistics
    assert set(train[:, 3][~train[:, 3].isnan()].tolist()) <= {0.0, 1.0, 2.0}
    schema = pyro_vae.data.tables.TableSchema.from_dict(json.loads(json.dumps(splits.columns.to_dict())))
    assert schema == splits.columns
    spec = splits.columns.likelihood_spec()
    assert spec["name"] == "columns" and spec["options"]["names"] == splits.feature_names
    lines = splits.columns.summary_lines()
    assert any("'city': categorical" in line for line in lines) and "missing in train" in lines[0]


def test_a_user_mapping_overrides_the_choice_by_name_or_index():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_table(mixed_frame(), column_likelihoods={"visits": "poisson", 0: "student_t"})
    names = [c.likelihood_name for c in splits.columns.columns]
    assert names[0] == "student_t" and names[2] == "poisson"
    with pytest.raises(ConfigError, match="not in the table"):
        splits.columns.with_likelihoods({"age": "gaussian"})


def test_raw_unit_log_density_of_a_standardized_gaussian_is_the_closed_form():
    """J = -sum log s_d: log N(y; 0, I) + J = log N(x; m, diag s^2) exactly, per point."""
    rng = np.random.default_rng(1)
    x = rng.normal([3.0, -200.0], [0.01, 1e4], size=(400, 2))
    splits = load_table(x, seed=0)
    pre = splits.preprocessing
    y = splits.test.double()
    ldj = pre.log_abs_det_jacobian_per_feature(2)
    model_units = dist.Normal(0.0, 1.0).log_prob(y).sum(1)
    raw = torch.from_numpy(pre.inverse(splits.test).double().numpy())
    mean, std = torch.tensor(pre.mean, dtype=torch.float64), torch.tensor(pre.std, dtype=torch.float64)
    closed = dist.Normal(mean, std).log_prob(raw).sum(1)
    torch.testing.assert_close(model_units + ldj.sum(), closed, rtol=0, atol=1e-3)
    # and evaluate adds it: a gaussian_fixed VAE with sigma = 1 and a decoder at 0 is N(0, I)
    vae = pyro_vae.VAE(2, 1, hidden=(), likelihood={"name": "gaussian_fixed", "options": {"scale": 1.0}})
    for lin in (vae.decoder.net[0], vae.encoder.net[0]):  # p(x|z) = N(0, I) and q(z|x) = p(z)
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    with torch.no_grad():
        vae.encoder.net[0].bias[1:] = _inverse_softplus(1.0 - vae.encoder_min_scale)
    m = pyro_vae.evaluate(vae, splits, num_samples=5)
    assert m["log_likelihood_data_units"] == pytest.approx(closed.mean().item(), abs=1e-3)
    assert m["log_likelihood_data_units"] == pytest.approx(m["log_likelihood"] + ldj.sum().item(), abs=1e-4)


# --------------------------------------------------------------------------- the mixed likelihood


def test_a_mixed_models_elbo_is_the_sum_of_its_columns_terms_by_hand():
    columns = [
        "gaussian",
        "bernoulli",
        "negative_binomial",
        {"name": "categorical", "options": {"num_categories": 3}},
        "beta",
    ]
    torch.manual_seed(0)
    vae = pyro_vae.VAE(5, 2, hidden=(8,), likelihood={"name": "columns", "options": {"columns": columns}})
    assert vae.likelihood.num_params == 3
    x = torch.tensor([[0.3, 1.0, 4.0, 2.0, 0.25], [-1.2, 0.0, 0.0, 0.0, 0.9]])
    pyro.set_rng_seed(3)
    loss = pyro.infer.Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    guide = poutine.trace(vae.guide).get_trace(x)
    z = guide.nodes["z"]["value"]
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        p = vae.decoder(z)  # (2, 3, 5)
        terms = [
            dist.Normal(p[:, 0, 0], F.softplus(p[:, 1, 0]) + 1e-3).log_prob(x[:, 0]),
            dist.Bernoulli(logits=p[:, 0, 1]).log_prob(x[:, 1]),
            dist.NegativeBinomial(F.softplus(p[:, 0, 2]) + 1e-3, logits=p[:, 1, 2]).log_prob(x[:, 2]),
            dist.Categorical(logits=p[:, :3, 3]).log_prob(x[:, 3]),
            dist.Beta(F.softplus(p[:, 0, 4]) + 1e-2, F.softplus(p[:, 1, 4]) + 1e-2).log_prob(x[:, 4]),
        ]
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
    by_hand = (sum(terms) + log_pz - log_q).sum()
    assert loss == pytest.approx(-by_hand.item(), rel=1e-5)
    assert vae.config()["likelihood"]["options"]["columns"] == columns


def test_auto_on_a_plain_tensor_with_columns_of_different_kinds_picks_per_column():
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randn(100, generator=g), torch.randint(0, 2, (100,), generator=g).float(),
                     torch.randint(0, 9, (100,), generator=g).float()], 1)  # fmt: skip
    vae = pyro_vae.VAE(3, 2)
    (note,) = description.complete(vae, x, has_missing=False)
    assert "'columns'" in note and "different kinds" in note
    assert vae.likelihood.columns == ["gaussian", "bernoulli", "negative_binomial"]
    grey = pyro_vae.VAE(3, 2)
    description.complete(grey, torch.rand(50, 3), has_missing=False)
    assert grey.likelihood.name == "continuous_bernoulli"  # one family as before
    with pytest.raises(DataError, match="column 1"):
        vae.check_data(torch.tensor([[0.0, 0.5, 1.0]]))


# --------------------------------------------------------------------------- missing cells, linear-Gaussian


def fa_vae(seed=0):
    """Factor analysis with missing=True, its encoder set to the prior: q(z|x) = N(0, I)."""
    torch.manual_seed(seed)
    vae = pyro_vae.VAE(D, L, hidden=(), likelihood="gaussian_shared", missing=True)
    enc = vae.encoder.net.net[0]
    torch.nn.init.zeros_(enc.weight)
    with torch.no_grad():
        enc.bias[:L] = 0.0
        enc.bias[L:] = _inverse_softplus(1.0 - vae.encoder_min_scale)
    lin = vae.decoder.net[0]
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    psi = vae.likelihood.scale.detach().double() ** 2
    return vae, w, b, psi


def test_masked_likelihood_is_the_observed_columns_closed_form_marginal():
    """With q = p(z), log p-hat = log mean_k p(x_o | z_k) and its delta-method standard error
    is sd(w) / (sqrt(K) mean(w)) per point (about 0.01 nats here): the estimate is held to
    5 of those. The site's log p(x|z) is checked exactly against the observed Normals."""
    vae, w, b, psi = fa_vae()
    x = vae.sample(40).double()
    observed = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.4
    observed[:, 0] = True  # every point keeps an observed cell
    xm = torch.where(observed, x, torch.nan).float()
    k = 4000
    m = pyro_vae.evaluate(vae, xm, num_samples=k)
    assert m["missing_cells"] == int((~observed).sum()) and m["missing_rows"] == int((~observed).any(1).sum())
    cov = w @ w.T + torch.diag(psi)
    for i in range(len(x)):
        o = observed[i]
        exact = dist.MultivariateNormal(b[o], cov[o][:, o]).log_prob(x[i, o])
        z = torch.randn(k, L, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        lw = dist.Normal(z @ w[o].T + b[o], psi[o].sqrt()).log_prob(x[i, o]).sum(-1)
        wgt = (lw - lw.max()).exp()
        se = (wgt.std() / (wgt.mean() * math.sqrt(k))).item()
        assert abs(m["pointwise"]["log_likelihood"][i].item() - exact.item()) < 5 * se + 1e-3
    # the observation site: the sum of the observed cells' Normal terms, nothing for the rest
    trace = poutine.trace(vae.model).get_trace(xm)
    z = trace.nodes["z"]["value"].double()
    site = trace.nodes["x"]
    by_hand = (dist.Normal(z @ w.T + b, psi.sqrt()).log_prob(x) * observed).sum(-1)
    torch.testing.assert_close(site["fn"].log_prob(site["value"]).double(), by_hand, atol=1e-4, rtol=0)


def test_imputation_of_a_linear_gaussian_model_is_the_exact_conditional_mean():
    """Self-normalised importance sampling with K prior draws: its error on E[x_m | x_o] is
    about sqrt(Var(x_m-mean | x_o) / ESS), Var = (W_m S W_m^T)_jj with S the posterior
    covariance given x_o; the ESS is measured on our own draws. Held to 5 of those."""
    vae, w, b, psi = fa_vae(1)
    x = vae.sample(20).double()
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[:, 3:] = False
    xm = torch.where(observed, x, torch.nan).float()
    k = 4000
    filled = vae.impute(xm, num_samples=k).double()
    assert torch.equal(filled[:, :3], xm[:, :3].double())  # observed cells unchanged
    cov = w @ w.T + torch.diag(psi)
    o, mis = observed[0], ~observed[0]
    gain = cov[mis][:, o] @ torch.linalg.inv(cov[o][:, o])
    for i in range(len(x)):
        exact = b[mis] + gain @ (x[i, o] - b[o])
        prec = torch.eye(L, dtype=torch.float64) + w[o].T @ (w[o] / psi[o][:, None])
        var = torch.diagonal(w[mis] @ torch.linalg.inv(prec) @ w[mis].T)
        z = torch.randn(k, L, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        lw = dist.Normal(z @ w[o].T + b[o], psi[o].sqrt()).log_prob(x[i, o]).sum(-1)
        wn = torch.softmax(lw, 0)
        ess = 1 / (wn**2).sum()
        assert ((filled[i, mis] - exact).abs() < 5 * (var / ess).sqrt() + 1e-3).all()
    draws = vae.impute(xm[:4], num_samples=50, draws=True)
    assert draws.shape == (50, 4, D) and not draws.isnan().any()
    assert torch.equal(draws[:, :, :3], xm[:4, :3].expand(50, -1, -1))


def test_fit_turns_on_missing_cells_and_inf_is_still_an_error():
    x = torch.randn(60, 3)
    x[::7, 1] = torch.nan
    vae = pyro_vae.VAE(3, 2, hidden=(8,))
    history = pyro_vae.fit(vae, x, epochs=2, progress=False)
    assert vae.missing and any("missing" in n for n in history.notes)
    assert not torch.isnan(vae.impute(x, 10)).any()
    plain = pyro_vae.VAE(3, 2, hidden=(8,), likelihood="gaussian")
    with pytest.raises(DataError, match="missing=True"):
        plain.check_data(x)
    x[0, 0] = math.inf
    with pytest.raises(DataError, match="infinite"):
        vae.check_data(x)


# --------------------------------------------------------------------------- CSV and the command line


def write_raw_csv(path, n=120):
    rng = np.random.default_rng(0)
    rows = ["income,smoker,visits,city,score"]
    for i in range(n):
        income = "" if i % 17 == 3 else f"{rng.normal(4e4, 1e4):.1f}"
        city = "NA" if i % 23 == 5 else rng.choice(["paris", "rome", "oslo"])
        rows.append(f"{income},{rng.integers(0, 2)},{rng.poisson(2)},{city},{rng.normal():.4f}")
    path.write_text("\n".join(rows) + "\n")


def test_read_table_codes_text_and_keeps_missing_cells(tmp_path):
    path = tmp_path / "raw.csv"
    write_raw_csv(path)
    table = read_table(path)
    assert table.names == ["income", "smoker", "visits", "city", "score"]
    assert table.levels == {3: ["oslo", "paris", "rome"]}
    assert np.isnan(table.values[:, 0]).sum() == 7 and np.isnan(table.values[:, 3]).sum() == 5
    with pytest.raises(DataError, match="non-numeric"):
        pyro_vae.data.read_csv(path)


def test_cli_on_a_raw_mixed_csv_with_missing_cells_reports_what_it_chose(tmp_path, capsys):
    path = tmp_path / "raw.csv"
    write_raw_csv(path)
    out = tmp_path / "run"
    args = ["train", "--dataset", "csv", "--data-path", str(path), "--out", str(out), "--epochs", "3",
            "--eval-samples", "10", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "column  'income': real, standardized" in printed and "'city': categorical" in printed
    assert "missing (NaN) cells" in printed and "missing cells in" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["missing"] is True and config["model"]["likelihood"]["name"] == "columns"
    assert [c["name"] for c in config["columns"]["columns"]] == [
        "income",
        "smoker",
        "visits",
        "city",
        "score",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["log_likelihood_data_units"]) and metrics["log_abs_det_jacobian"] < -5
    # a mapping from the command line, checked against the table
    out2 = tmp_path / "run2"
    assert main([*args[:6], str(out2), "--epochs", "2", "--eval-samples", "5", "--no-progress",
                 "--column-likelihoods", '{"visits": "poisson"}']) == 0  # fmt: skip
    config = json.loads((out2 / "config.json").read_text())
    assert config["model"]["likelihood"]["options"]["columns"][2] == "poisson"
    assert config["run"]["data"]["column_likelihoods"] == {"visits": "poisson"}
    assert likelihoods.names().count("columns") == 1


def test_groups_of_several_columns_keep_their_places():
    lik = likelihoods.create(
        {"name": "columns", "options": {"columns": ["gaussian", "bernoulli", "gaussian", "poisson"]}}
    )
    lik.setup(4)
    params = torch.randn(3, 5, 2, 4)  # (samples, points, num_params, D)
    d = lik(params)
    x = torch.tensor([0.5, 1.0, -0.3, 2.0]).expand(5, 4)
    lp = d.log_prob(x)
    assert lp.shape == (3, 5, 4) and d.sample().shape == (3, 5, 4)
    gauss = dist.Normal(params[..., 0, 2], F.softplus(params[..., 1, 2]) + 1e-3).log_prob(x[:, 2])
    torch.testing.assert_close(lp[..., 2], gauss)
    torch.testing.assert_close(lp[..., 1], dist.Bernoulli(logits=params[..., 0, 1]).log_prob(x[:, 1]))


def test_a_column_kind_comes_from_every_observed_value_not_the_training_split_alone():
    """Integers in the training rows but 42.5 in another split: the column is real, not counts."""
    from pyro_vae.data.tables import infer_schema

    train = np.array([[0.0], [3.0], [5.0], [7.0]])
    whole = np.vstack([train, [[42.5]]])
    assert infer_schema(train, ["s3"]).columns[0].kind == "count"
    spec = infer_schema(train, ["s3"], support=whole).columns[0]
    assert spec.kind == "real" and spec.likelihood == "gaussian"
    assert spec.mean == pytest.approx(3.75)  # statistics still from the training rows


# --------------------------------------------------------------------------- integers, levels, input scale


def integer_frame(n=300, seed=1):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    age = rng.integers(19, 80, n)
    return pd.DataFrame(
        {
            "age": age,  # integers on a scale, no zero: a rounded Gaussian
            "cholesterol": np.round(150 + age + rng.normal(0, 20, n)),
            "visits": rng.poisson(2.0, n),  # counts from 0: negative binomial
            "rating": rng.integers(1, 8, n),  # a coded 1..7 scale: seven levels
            "group": rng.choice([17.5, 22.0, 27.0], n),  # three numbers, not integers: levels
        }
    )


def test_integers_counts_and_few_valued_columns_get_their_own_kinds():
    splits = load_table(integer_frame(), seed=0)
    cols = {c.name: c for c in splits.columns.columns}
    assert [cols[n].kind for n in ("age", "cholesterol", "visits", "rating", "group")] == [
        "integer", "integer", "count", "categorical", "categorical",
    ]  # fmt: skip
    assert cols["age"].likelihood_name == "discretized_gaussian" and not cols["age"].standardize
    assert cols["age"].likelihood["options"]["center"] == pytest.approx(cols["age"].mean)
    assert cols["group"].values == [17.5, 22.0, 27.0] and cols["group"].levels == ["17.5", "22", "27"]
    assert cols["rating"].likelihood == {
        "name": "categorical",
        "options": {"num_categories": 7, "values": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]},
    }
    # codes in model space; to_raw gives the numbers back
    raw = integer_frame().to_numpy(dtype=float)
    coded = splits.columns.coded(raw)
    assert set(np.unique(coded[:, 4])) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(splits.columns.to_raw(torch.as_tensor(coded, dtype=torch.float32)), raw)
    # discrete columns have no Jacobian: nothing here is standardized
    assert splits.preprocessing.is_identity


def test_a_value_outside_a_columns_levels_is_a_clear_error():
    splits = load_table(integer_frame(), seed=0)
    raw = integer_frame().to_numpy(dtype=float)
    raw[0, 4] = 30.0
    with pytest.raises(DataError, match="'group' holds 30, which is not one of its levels"):
        splits.columns.transform(raw)


def test_fit_on_a_table_scales_the_encoders_inputs_and_the_scale_is_saved(tmp_path):
    splits = load_table(integer_frame(), seed=0)
    vae = pyro_vae.VAE(splits.num_features, 2, hidden=(16,), likelihood="auto")
    history = pyro_vae.fit(vae, splits, epochs=2, progress=False)
    assert any("standardized" in note for note in history.notes)
    x = splits.train
    center, spread = torch.tensor(vae.input_scale["center"]), torch.tensor(vae.input_scale["spread"])
    scaled = torch.tensor(splits.columns.encoder_scaled)
    assert scaled.tolist() == [True, True, True, False, False]  # levels' codes are left alone
    torch.testing.assert_close(center, torch.where(scaled, x.double().mean(0), 0.0).float())
    torch.testing.assert_close(spread, torch.where(scaled, x.double().std(0, unbiased=False), 1.0).float())
    # the encoder sees (x - center) / spread: the same as an unscaled encoder fed that
    scaled = vae.encoder.net
    torch.testing.assert_close(scaled(x[:5]), scaled.net((x[:5] - center) / spread))
    vae.save(tmp_path)
    loaded = pyro_vae.VAE.load(tmp_path)
    assert loaded.input_scale == vae.input_scale
    torch.testing.assert_close(loaded.encode(x[:5])[0], vae.encode(x[:5])[0])


def test_input_scale_is_checked():
    with pytest.raises(ConfigError, match="3 centers and spreads"):
        pyro_vae.VAE(3, 2, input_scale={"center": [0.0], "spread": [1.0]})
    with pytest.raises(ConfigError, match="spreads positive"):
        pyro_vae.VAE(2, 2, input_scale={"center": [0.0, 0.0], "spread": [1.0, 0.0]})


def test_a_narrow_column_inside_the_unit_interval_is_real():
    """0.05 to 0.15 (a smoothness ratio): a continuous Bernoulli cannot peak there; Gaussian, standardized."""
    from pyro_vae.data.columns import UNIT_MIN_SD
    from pyro_vae.data.tables import infer_schema

    rng = np.random.default_rng(0)
    narrow, spread = rng.uniform(0.05, 0.15, 200), rng.uniform(0.02, 0.98, 200)
    cols = infer_schema(np.column_stack([narrow, spread]), ["smoothness", "share"]).columns
    assert narrow.std() < UNIT_MIN_SD < spread.std()
    assert (cols[0].kind, cols[0].likelihood, cols[0].standardize) == ("real", "gaussian", True)
    assert "narrow range" in cols[0].reason
    assert (cols[1].kind, cols[1].likelihood) == ("unit", "beta")


def test_the_default_latent_size_grows_with_a_wide_table():
    from pyro_vae.app.config import DEFAULT_LATENT, ModelConfig

    m = ModelConfig()
    assert m.latent_size(5, table=True) == m.latent_size(16, table=True) == DEFAULT_LATENT
    assert m.latent_size(30, table=True) == 15 and m.latent_size(31, table=True) == 16
    assert m.latent_size(784) == DEFAULT_LATENT  # images keep the default
    assert ModelConfig(latent_dim=3).latent_size(30, table=True) == 3  # a set size is kept


def test_a_numeric_levels_imputed_value_is_its_conditional_mean_in_its_own_units():
    """Levels 17.5, 22, 27 with weighted probabilities .2, .5, .3: 22.6 (a mean, not the mode 22)."""
    lik = likelihoods.create("categorical", num_categories=3, values=[17.5, 22.0, 27.0])
    lik.setup(1)
    probs = torch.tensor([[[0.2, 0.5, 0.3]], [[0.2, 0.5, 0.3]]])  # two draws of z, one point
    d = lik(probs.log().reshape(2, 1, 3, 1))
    code = lik.weighted_mean(d, torch.tensor([[0.5], [0.5]]))
    splits = load_table(integer_frame(), seed=0)
    j = splits.feature_names.index("group")
    row = torch.zeros(1, splits.num_features)
    row[0, j] = code.reshape(())
    assert splits.columns.to_raw(row)[0, j] == pytest.approx(0.2 * 17.5 + 0.5 * 22 + 0.3 * 27, abs=1e-5)
    text = likelihoods.create("categorical", num_categories=3)
    text.setup(1)
    assert text.weighted_mean(text(probs.log().reshape(2, 1, 3, 1)), torch.tensor([[0.5], [0.5]])) == 1
    with pytest.raises(ValueError, match="increasing"):
        likelihoods.create("categorical", num_categories=2, values=[2.0, 1.0])
