r"""ArviZ diagnostics of the amortized posterior, checked where the answers are known.

A linear VAE with ``likelihood="gaussian_shared"`` and the standard normal prior is factor
analysis (see ``test_factor_analysis.py``): :math:`x \mid z \sim \mathcal N(Wz + b, \Psi)`,
the exact posterior is :math:`\mathcal N(\Sigma W^\top \Psi^{-1}(x - b), \Sigma)` with
:math:`\Sigma = (I + W^\top \Psi^{-1} W)^{-1}`, and :math:`p(x) = \mathcal N(b, WW^\top + \Psi)`.
Instead of training, the weights are set: the decoder's so that :math:`W^\top \Psi^{-1} W`
is diagonal (then the exact posterior is a diagonal Gaussian, which the linear encoder
represents exactly), the encoder's to that posterior, its scale multiplied by a factor
:math:`f`. With :math:`L = 2` the importance weights :math:`p(z \mid x) / q(z \mid x)` are
then exactly Pareto distributed with shape :math:`1 - f^2` for :math:`f < 1`
(:math:`\log w = (1 - f^2)\,u + c` with :math:`u \sim \mathrm{Exp}(1)`), and bounded for
:math:`f \ge 1`: the k-hat diagnostic has a known answer.
"""

from __future__ import annotations

import json
import math

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.figure import Figure

import pyro_vae
from pyro_vae import diagnostics

D, L = 6, 2


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def set_linear_vae(
    w: torch.Tensor, b: torch.Tensor, noise_sd: torch.Tensor, q_factor: float = 1.0, q_scale=None
) -> tuple[pyro_vae.VAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear VAE with decoder (W, b, Psi = noise_sd^2) and the exact posterior mean in the encoder.

    The encoder's scale is ``q_factor`` times the exact posterior's marginal sd, or
    ``q_scale``. Returns the VAE and (Sigma, A, c): the exact posterior is N(A x + c, Sigma).
    """
    vae = pyro_vae.VAE(D, L, hidden=(), likelihood="gaussian_shared", prior="standard_normal")
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(w)
        vae.decoder.net[0].bias.copy_(b)
        raw = [_inverse_softplus(s - vae.likelihood.min_scale) for s in noise_sd.tolist()]
        vae.likelihood.raw_scale.copy_(torch.tensor(raw))
        psi = vae.likelihood.scale.double() ** 2  # the float32 values the model uses
        w = vae.decoder.net[0].weight.double()
        sigma = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + w.T @ (w / psi[:, None]))
        a = sigma @ w.T / psi
        c = -a @ vae.decoder.net[0].bias.double()
        scale = q_factor * sigma.diagonal().sqrt() if q_scale is None else torch.as_tensor(q_scale)
        lin = vae.encoder.net[0]
        lin.weight[:L] = a.float()
        lin.bias[:L] = c.float()
        lin.weight[L:].zero_()
        lin.bias[L:] = torch.tensor([_inverse_softplus(s - vae.encoder.min_scale) for s in scale.tolist()])
    return vae, sigma, a, c


def fa_vae(q_factor: float = 1.0, seed: int = 0) -> pyro_vae.VAE:
    """Factor analysis with a diagonal exact posterior (sds 0.32 and 0.71) and the encoder set to it."""
    g = torch.Generator().manual_seed(seed)
    noise_sd = 0.3 + 0.7 * torch.rand(D, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=torch.float64))
    w = noise_sd[:, None] * u * torch.tensor([3.0, 1.0], dtype=torch.float64)  # W^T Psi^-1 W = diag(9, 1)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    return set_linear_vae(w, b, noise_sd, q_factor)[0]


def exact_log_px(vae: pyro_vae.VAE, x: torch.Tensor) -> np.ndarray:
    w = vae.decoder.net[0].weight.double()
    b = vae.decoder.net[0].bias.double()
    cov = w @ w.T + torch.diag(vae.likelihood.scale.double() ** 2)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x.double()).detach().numpy()


def draw(vae: pyro_vae.VAE, n: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return vae.sample(n)


# --------------------------------------------------------------------------- InferenceData


def test_inference_data_has_every_group_with_named_dims_and_consistent_values():
    vae = fa_vae(1.25)
    x = draw(vae, 30)
    labels = torch.arange(30) % 4
    idata = diagnostics.to_inference_data(vae, x, 400, labels=labels, num_predictive=5, num_prior=50)
    assert set(idata.groups()) == {
        "posterior",
        "posterior_predictive",
        "observed_data",
        "prior",
        "sample_stats",
    }
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "latent")
    assert idata.posterior["z"].shape == (1, 400, 30, L)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "feature")
    assert idata.posterior_predictive["x"].shape == (1, 5, 30, D)
    assert idata.sample_stats["log_px_given_z"].dims == ("chain", "draw", "obs")
    assert idata.sample_stats["log_weight"].dims == ("chain", "draw", "obs")
    assert idata.observed_data["x"].dims == ("obs", "feature")
    assert idata.prior["z"].dims == ("chain", "draw", "latent") and idata.prior["z"].shape == (1, 50, L)
    assert idata.prior["x"].dims == ("chain", "draw", "feature")
    np.testing.assert_array_equal(idata.posterior["label"].values, labels.numpy())
    np.testing.assert_array_equal(idata.posterior["obs"].values, np.arange(30))
    np.testing.assert_allclose(idata.observed_data["x"].values, x.numpy())

    # the stored numbers are what they claim to be, for the stored draws
    z = torch.as_tensor(idata.posterior["z"].values[0])  # (K, n, L)
    with torch.no_grad():
        log_px_z = vae.decode(z).log_prob(x).numpy()
        loc, scale = vae.encode(x)
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1).numpy()
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1).numpy()
    np.testing.assert_allclose(idata.sample_stats["log_px_given_z"].values[0], log_px_z, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(idata.sample_stats["lp"].values[0], log_px_z + log_pz, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        idata.sample_stats["log_weight"].values[0], log_px_z + log_pz - log_q, rtol=1e-5, atol=1e-4
    )
    # draws come from q: their means agree with the encoder's within Monte Carlo error
    err = (z.mean(0) - loc) / (scale / math.sqrt(400))
    assert err.abs().max() < 4.5
    # the draws are evaluate's draws for the same seed: the same log p(x)
    log_w = idata.sample_stats["log_weight"].values[0]
    ll = np.logaddexp.reduce(log_w.astype(np.float64), axis=0) - math.log(400)
    reference = pyro_vae.evaluate(vae, x, 400)["pointwise"]["log_likelihood"].numpy()
    np.testing.assert_allclose(ll, reference, atol=1e-4)
    # posterior predictive draws scatter around the decoder mean with the likelihood's scale
    pred = idata.posterior_predictive["x"].values[0]  # (5, n, D)
    with torch.no_grad():
        mean = vae.decode(z[:5]).mean.numpy()
    resid = (pred - mean) / vae.likelihood.scale.detach().numpy()
    assert abs(resid.std() - 1) < 0.1 and abs(resid.mean()) < 0.1


def test_inference_data_round_trips_through_netcdf(tmp_path):
    vae = fa_vae(1.0)
    x = draw(vae, 12)
    idata = diagnostics.to_inference_data(vae, x, 40, labels=np.arange(12) % 3, seed=3)
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        original, loaded = idata[group], back[group]
        assert set(loaded.data_vars) == set(original.data_vars), group
        assert dict(loaded.sizes) == dict(original.sizes), group
        assert set(loaded.coords) == set(original.coords), group
        for name in original.coords:
            np.testing.assert_array_equal(loaded[name].values, original[name].values)
        for name in original.data_vars:
            assert loaded[name].dims == original[name].dims
            np.testing.assert_array_equal(loaded[name].values, original[name].values)
        xr.testing.assert_identical(loaded.load().drop_attrs(), original.drop_attrs())
    assert back.attrs["likelihood"] == "gaussian_shared" and back.attrs["num_samples"] == 40
    assert "label" in back.posterior.coords and back.posterior["label"].dims == ("obs",)


def test_inference_data_rejects_bad_input():
    vae = fa_vae()
    x = draw(vae, 5)
    with pytest.raises(ValueError, match="one entry per data point"):
        diagnostics.to_inference_data(vae, x, 10, labels=[0, 1])
    with pytest.raises(ValueError, match="num_samples"):
        diagnostics.to_inference_data(vae, x, 0)
    with pytest.raises(ValueError, match="shape"):
        diagnostics.to_inference_data(vae, torch.randn(5, D + 1), 10)


def test_posterior_predictive_draws_are_capped_for_large_data(monkeypatch):
    vae = fa_vae()
    x = draw(vae, 40)
    monkeypatch.setattr(diagnostics.amortized, "PREDICTIVE_ELEMENTS", 40 * D * 3)  # 3 draws per point
    idata = diagnostics.to_inference_data(vae, x, 50)
    assert idata.posterior_predictive.sizes["draw"] == 3
    assert idata.posterior.sizes["draw"] == 50


# --------------------------------------------------------------------------- PSIS


@pytest.mark.parametrize("q_factor", [1.0, 1.25])
def test_khat_is_small_when_the_guide_is_the_exact_posterior_or_wider(q_factor):
    vae = fa_vae(q_factor)
    x = draw(vae, 100)
    result = diagnostics.psis_diagnostic(vae, x, 1000)
    # bounded weights: k-hat < 0.5 (or NaN: all weights equal, no tail) for almost every point
    assert result.share_above(0.5) <= 0.03
    assert np.mean(~np.isnan(result.khat)) > 0.8  # mostly a real fit, not the constant-weight case
    summary = result.summary()
    assert summary["share_khat_above"]["0.7"] <= 0.03
    assert json.loads(json.dumps(result.to_dict(pointwise=True)))["num_points"] == 100


@pytest.mark.parametrize("q_factor", [0.9, 0.7, 0.5])
def test_khat_tracks_the_pareto_shape_of_a_too_narrow_guide(q_factor):
    """With L = 2 and q's scale f times the posterior's, the weights are Pareto with shape
    1 - f^2 (module docstring), whatever the decoder. Measured over six seeds of the draws:
    the median k-hat over 100 points at K = 1000 is within 0.065 of it for f = 0.9, 0.7, 0.5
    (a little high for light tails, low for heavy ones, as the finite-K estimate is)."""
    vae = fa_vae(q_factor)
    result = diagnostics.psis_diagnostic(vae, draw(vae, 100), 1000)
    assert np.median(result.khat) == pytest.approx(1 - q_factor**2, abs=0.08)


def test_khat_flags_a_degraded_guide():
    vae = fa_vae(0.2)  # q five times too narrow: weights Pareto with shape 0.96
    x = draw(vae, 100)
    result = diagnostics.psis_diagnostic(vae, x, 1000, labels=torch.arange(100) % 10)
    assert result.share_above(0.7) >= 0.75
    assert result.share_above(0.5) >= result.share_above(0.7) >= result.share_above(1.0)
    worst = result.summary(worst=5)["worst"]
    assert [w["khat"] for w in worst] == sorted((w["khat"] for w in worst), reverse=True)
    assert worst[0]["khat"] == pytest.approx(np.nanmax(result.khat))
    assert worst[0]["label"] == worst[0]["index"] % 10
    # the plain estimate misses the mass q does not cover: far below the exact value
    exact = exact_log_px(vae, x)
    assert np.mean(result.log_px_is - exact) < -0.2
    fig = result.plot()
    assert isinstance(fig, Figure)
    assert {round(line.get_ydata()[0], 2) for line in fig.axes[0].get_lines()} == {0.5, 0.7, 1.0}


def test_psis_log_px_agrees_with_evaluate_and_with_the_exact_marginal():
    """q 1.25 times wider than the posterior: k-hat < 0.5 everywhere. Per point the
    delta-method standard error of the estimate at K = 2000 is below 0.006 nats here."""
    vae = fa_vae(1.25)
    x = draw(vae, 100)
    result = diagnostics.psis_diagnostic(vae, x, 2000, seed=5)
    assert np.all(result.khat < 0.5)
    reference = pyro_vae.evaluate(vae, x, 2000, seed=5)["pointwise"]["log_likelihood"].numpy()
    np.testing.assert_allclose(result.log_px_is, reference, atol=1e-4)  # the same draws
    np.testing.assert_allclose(result.log_px, result.log_px_is, atol=0.01)  # smoothing changes little
    exact = exact_log_px(vae, x)
    for estimate in (result.log_px, reference):
        assert np.abs(estimate - exact).max() < 0.03
        assert abs(np.mean(estimate - exact)) < 0.003
    # the same diagnostic from stored draws
    idata = diagnostics.to_inference_data(vae, x, 2000, seed=5, num_predictive=1, num_prior=1)
    again = diagnostics.psis_from_inference_data(idata)
    np.testing.assert_allclose(again.khat, result.khat, atol=1e-6)
    np.testing.assert_allclose(again.log_px, result.log_px, atol=1e-6)


def test_psis_rejects_too_few_samples():
    vae = fa_vae()
    with pytest.raises(ValueError, match=">= 2"):
        diagnostics.psis_diagnostic(vae, draw(vae, 3), 1)


# --------------------------------------------------------------------------- NUTS


def test_nuts_recovers_a_correlated_conjugate_posterior():
    """Decoder with W^T Psi^-1 W far from diagonal: the exact posterior N(m, S) has
    correlation -0.42. NUTS means and sds must match m and sqrt(diag S) within 4 Monte
    Carlo standard errors (from the ESS), with r-hat < 1.05. The encoder is set to
    N(m, diag(1.5^2 S_jj)), so the gap log p(x) - ELBO must be KL(q || p) in closed form, up
    to the Monte Carlo error of the ELBO's reconstruction term (its sd over q / sqrt(K))."""
    g = torch.Generator().manual_seed(3)
    noise_sd = 0.5 + 0.5 * torch.rand(D, generator=g, dtype=torch.float64)
    w = torch.randn(D, L, generator=g, dtype=torch.float64)
    w[:, 1] = 0.5 * w[:, 0] + 0.8 * w[:, 1]  # correlated columns: a correlated posterior
    b = torch.randn(D, generator=g, dtype=torch.float64)
    _, sigma, a, c = set_linear_vae(w, b, noise_sd, q_scale=torch.ones(L))
    exact_sd = sigma.diagonal().sqrt()
    vae, _, _, _ = set_linear_vae(w, b, noise_sd, q_scale=1.5 * exact_sd)
    assert sigma[0, 1] / (exact_sd[0] * exact_sd[1]) < -0.4
    x = draw(vae, 1, seed=2)
    m = (x.double() @ a.T + c).numpy()
    threads = torch.get_num_threads()
    k = 40_000
    result = diagnostics.nuts_posterior(
        vae, x[0], num_chains=2, warmup=150, draws=300, seed=1, num_is_samples=k
    )
    assert torch.get_num_threads() == threads
    assert all(p.requires_grad and p.grad is None for p in vae.parameters())
    assert np.all(result.r_hat < 1.05)
    assert result.divergences.sum() == 0
    assert np.all(result.ess_bulk > 100)
    assert np.all(np.abs(result.mean - m) < 4 * result.mcse_mean), (result.mean, m, result.mcse_mean)
    assert np.all(np.abs(result.sd - exact_sd.numpy()) < 4 * result.mcse_sd), (result.sd, exact_sd)
    # the tolerances are tight enough to matter: the prior's sd (1) or q's (1.5x) would fail
    assert np.all(np.abs(result.sd - 1.5 * exact_sd.numpy()) > 4 * result.mcse_sd)
    q = torch.distributions.MultivariateNormal(torch.as_tensor(m[0]), scale_tril=torch.diag(1.5 * exact_sd))
    posterior = torch.distributions.MultivariateNormal(torch.as_tensor(m[0]), covariance_matrix=sigma)
    kl = torch.distributions.kl_divergence(q, posterior).item()
    assert kl > 0.5
    assert result.khat[0] < 0.5  # the importance-sampled log p(x) is reliable ...
    assert result.log_px[0] == pytest.approx(exact_log_px(vae, x)[0], abs=0.05)
    with torch.no_grad():
        recon = vae.decode(q.sample((20_000,)).float()).log_prob(x).double()
    se = (recon.std() / math.sqrt(k)).item()  # ... the ELBO's reconstruction term is an average
    assert result.amortization_gap[0] == pytest.approx(kl, abs=4 * se + 0.05)


def test_nuts_agrees_with_an_exact_encoder_and_exposes_a_degraded_one(tmp_path):
    vae = fa_vae(1.0)
    x = draw(vae, 2, seed=4)
    result = diagnostics.nuts_posterior(
        vae, x, num_chains=2, warmup=100, draws=250, seed=0, index=[7, 9], labels=[1, 2], num_is_samples=4000
    )
    assert result.mean.shape == result.sd.shape == (2, L)
    assert np.all(result.r_hat < 1.05)
    # NUTS against q within Monte Carlo error (z-scores from the ESS-based standard errors)
    assert np.all(np.abs(result.mean_z_scores()) < 4), result.mean_z_scores()
    assert np.all(np.abs(result.sd_z_scores()) < 4), result.sd_z_scores()
    # q is the posterior: no gap (the ELBO's reconstruction term is a 4000-draw average)
    assert np.all(np.abs(result.amortization_gap) < 0.03)
    # the same draws reject a guide with a fifth of the scale
    assert np.all(np.abs(result.sd - 0.2 * result.q_scale) / result.mcse_sd > 10)

    summary = result.summary()
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mcse_mean"} <= set(summary.columns)
    assert len(summary) == 2 * L
    report = json.loads(json.dumps(result.to_dict()))
    assert [p["index"] for p in report["points"]] == [7, 9] and report["points"][1]["label"] == 2
    assert report["r_hat_max"] < 1.05 and report["divergences"] == 0
    idata = result.idata
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "latent")
    assert idata.posterior["z"].shape == (2, 250, 2, L)
    assert idata.sample_stats["diverging"].dtype == bool
    np.testing.assert_array_equal(idata.posterior["obs"].values, [7, 9])
    np.testing.assert_allclose(idata.constant_data["q_loc"].values, result.q_loc)
    path = tmp_path / "nuts.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    np.testing.assert_array_equal(back.posterior["label"].values, [1, 2])
    fig = result.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * (L + 1)  # marginals and the 2-D scatter


def test_nuts_rejects_bad_settings():
    vae = fa_vae()
    x = draw(vae, 1)
    with pytest.raises(ValueError, match="warmup"):
        diagnostics.nuts_posterior(vae, x, warmup=-1)
    with pytest.raises(ValueError, match="num_chains"):
        diagnostics.nuts_posterior(vae, x, num_chains=0)
    with pytest.raises(ValueError, match="index"):
        diagnostics.nuts_posterior(vae, x, index=[1, 2])


# --------------------------------------------------------------------------- posterior predictive


def test_ppc_figures_for_tables_and_images():
    vae = fa_vae()
    idata = diagnostics.to_inference_data(vae, draw(vae, 20), 30, num_predictive=10)
    table = diagnostics.plot_ppc(idata)
    drawn = [ax for ax in table.axes if ax.get_lines()]
    assert len(drawn) == D  # one panel per feature, each with observed and predictive densities
    assert all(len(ax.get_lines()) > 10 for ax in drawn)
    images = diagnostics.plot_ppc(idata, image_shape=(2, 3), num_points=4, num_draws=5)
    (ax,) = images.axes
    canvas = ax.get_images()[0].get_array()
    assert canvas.shape == (4 * 3 - 1, 6 * 4 - 1)  # 4 rows of input + 5 draws, 2x3 pixels each
    # the first image of each row is the input
    np.testing.assert_allclose(canvas[:2, :3], idata.observed_data["x"].values[0].reshape(2, 3), rtol=1e-6)


def test_plots_depend_on_no_other_diagnostics_module_and_take_plain_arrays():
    """amortized and nuts import plots, never the other way round; plots reads attributes only."""
    import ast
    import inspect
    from types import SimpleNamespace

    from pyro_vae.diagnostics import plots

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(plots))):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    roots = {m.split(".")[0] for m in imported}
    assert roots <= {"__future__", "collections", "typing", "arviz", "numpy", "matplotlib", "pyro_vae"}
    assert {m for m in imported if m.startswith("pyro_vae")} == {"pyro_vae.data"}
    khat = np.array([0.1, 0.6, 0.8, 1.3, np.inf, np.nan])
    fig = diagnostics.plot_khat(SimpleNamespace(khat=khat, index=np.arange(10, 16), num_samples=100))
    assert "50.0% of points above 0.7" in fig.axes[0].get_title()


def test_arviz_model_comparison_refuses_the_amortized_posterior():
    """log p(x_i | z) at draws of each point's own q(z | x_i) is no likelihood over shared
    parameters: az.loo on it would be the harmonic-mean estimator of log p(x) under the name
    elpd_loo. The InferenceData has no log_likelihood group, so ArviZ refuses."""
    vae = fa_vae(1.25)
    idata = diagnostics.to_inference_data(vae, draw(vae, 10), 50, num_predictive=2, num_prior=5)
    assert "log_likelihood" not in idata.groups()
    for fn in (az.loo, az.waic):
        with pytest.raises(TypeError, match="log likelihood not found"):
            fn(idata)
    with pytest.raises(Exception, match="ELPD"):
        az.compare({"a": idata, "b": idata})
