r"""Annealed importance sampling and BDMC against exact marginal likelihoods.

Two models whose :math:`\log p(x)` is known exactly: the linear-Gaussian VAE (factor
analysis, closed form; see ``test_factor_analysis.py``) and a 1-D latent nonlinear model
(float64 trapezoid quadrature, accurate to ~1e-6; see ``test_evaluation.py``). Both have
*random* weights, so the encoder is a poor proposal (importance sampling is off by tenths
of a nat on average and by many nats on single points, see the factor-analysis tests): AIS
must get there by annealing, not by a good q.

Tolerances come from the standard error AIS states for each point (delta method over its
chains), measured with these settings and seeds: at most 0.010 nats per point on the
factor-analysis model (T = 500, 256 chains, from the prior; errors at most 0.018) and
at most 0.016 on the 1-D model (T = 500, 128 chains), and the stated errors are
calibrated (over 200 points the errors divided by their stated s.e. have a standard
deviation of 0.99-1.08). So 0.05 nats per point is at least 3 and mostly 5 or more
standard errors; an estimator that returned the ELBO (0.1-5 nats low here) or
mis-weighted one temperature would fail.
"""

from __future__ import annotations

import math

import pytest
import torch

import pyro_vae
from pyro_vae.errors import ConfigError
from pyro_vae.infer.ais import AISResult, ais, bdmc, schedule
from tests.test_evaluation import exact_log_px_1d, toy_vae
from tests.test_factor_analysis import L, _inverse_softplus, exact_log_px, exact_posterior, linear_vae

POINT_TOL = 0.05
N = 20


def _check_exact(result: AISResult, exact: torch.Tensor) -> None:
    err = result.log_px - exact
    assert err.shape == exact.shape
    assert err.abs().max() < POINT_TOL, err
    # the mean over N points has a standard error below 0.01 / sqrt(N) < 0.003
    assert abs(err.mean()) < 0.01, err.mean()
    assert torch.isfinite(result.log_px_se).all()
    assert ((result.ess >= 1 - 1e-9) & (result.ess <= result.num_chains + 1e-9)).all()
    # the step size adapts toward an acceptance of 0.65: averaged over the run it is near
    assert 0.5 < result.acceptance.mean() < 0.8


@pytest.mark.parametrize("seed", [0, 2])
def test_ais_matches_the_exact_factor_analysis_marginal(seed):
    vae = linear_vae(seed)
    x = vae.sample(N)
    result = ais(vae, x, num_steps=500, num_chains=256, num_leapfrog=2, initial="prior")
    _check_exact(result, exact_log_px(vae, x))
    assert result.log_px_se.max() < 0.015


@pytest.mark.parametrize("initial", ["encoder", "prior"])
def test_ais_matches_quadrature_on_a_1d_latent(initial):
    """The toy encoder's constant scale 1.5 is wider than the posterior, so its diagonal
    mass matrix is a fair one and both starts work: stated s.e. at most 0.016 per point."""
    vae, x = toy_vae(1, 1, n=N)
    result = ais(vae, x, num_steps=500, num_chains=128, num_leapfrog=2, initial=initial)
    _check_exact(result, exact_log_px_1d(vae, x))
    assert result.log_px_se.max() < 0.02


def test_ais_is_not_below_tight_importance_sampling():
    """Encoder mean set to the exact posterior mean, scales 1.25 x the posterior's: the
    importance weights are well behaved and IS at K = 5000 is within 0.0072 nats (its
    delta-method s.e., measured in test_factor_analysis.py). AIS from this q must not fall
    below IS by more than 3.5 combined standard errors on any of the 20 points (for
    independent normal errors, a chance of 0.5% of failing)."""
    vae = linear_vae(1)
    sigma, a, c = exact_posterior(vae)
    q_scale = 1.25 * sigma.diagonal().sqrt()
    with torch.no_grad():
        lin = vae.encoder.net[0]
        lin.weight[:L] = a.float()
        lin.bias[:L] = c.float()
        lin.weight[L:].zero_()
        lin.bias[L:] = torch.tensor([_inverse_softplus(s - vae.encoder.min_scale) for s in q_scale.tolist()])
    x = vae.sample(N)
    is_est = pyro_vae.evaluate(vae, x, num_samples=5000)["pointwise"]["log_likelihood"].double()
    result = ais(vae, x, num_steps=100, num_chains=64, num_leapfrog=2)
    allowed = 3.5 * (result.log_px_se**2 + 0.0072**2).sqrt()
    assert (result.log_px - is_est >= -allowed).all(), (result.log_px - is_est, allowed)
    # with a good q, few temperatures suffice and the chains agree
    assert result.log_weight_sd.max() < 0.2
    assert result.ess.min() > 0.9 * result.num_chains
    assert (result.log_px - exact_log_px(vae, x)).abs().max() < POINT_TOL


def _check_bracket(b, exact):
    """Each bound is stochastic: per point it may cross the exact value by chance, by a few
    of its standard errors; on average over the points it may not."""
    lower, upper = b.lower, b.upper
    se_lo, se_up = b.forward.log_px_se, b.reverse.log_px_se
    assert (lower <= exact + 4 * se_lo + 1e-9).all(), (lower - exact, se_lo)
    assert (upper >= exact - 4 * se_up - 1e-9).all(), (upper - exact, se_up)
    n = exact.numel()
    assert lower.mean() <= exact.mean() + 3 * (se_lo**2).mean().sqrt() / math.sqrt(n)
    assert upper.mean() >= exact.mean() - 3 * (se_up**2).mean().sqrt() / math.sqrt(n)
    # and the sandwich is tight with these settings: both within POINT_TOL of the truth
    assert b.gap.mean() < POINT_TOL
    assert (lower - exact).abs().max() < POINT_TOL and (upper - exact).abs().max() < POINT_TOL


def test_bdmc_brackets_the_exact_factor_analysis_marginal():
    vae = linear_vae(0)
    b = bdmc(vae, N, num_steps=500, num_chains=128, num_leapfrog=2, initial="prior", seed=3)
    assert b.x.shape == (N, 6) and b.z.shape == (N, L)
    _check_bracket(b, exact_log_px(vae, b.x))
    summary = b.summary()
    assert summary["lower"] <= summary["upper"] + 0.01
    assert summary["num_points"] == N
    gaps = b.gap.sort().values
    assert summary["gap_median"] == pytest.approx(gaps[(N - 1) // 2].item())  # torch's lower median
    assert summary["gap_max"] == pytest.approx(gaps[-1].item())


def test_bdmc_brackets_quadrature_on_a_1d_latent():
    vae, _ = toy_vae(0, 1)
    b = bdmc(vae, N, num_steps=500, num_chains=64, num_leapfrog=2, seed=1)
    _check_bracket(b, exact_log_px_1d(vae, b.x))


def test_a_short_bdmc_run_shows_a_gap():
    """With 5 temperatures the two bounds are far apart: the gap is the warning."""
    vae = linear_vae(0)
    b = bdmc(vae, N, num_steps=5, num_chains=8, num_leapfrog=2, initial="prior")
    exact = exact_log_px(vae, b.x)
    assert b.gap.mean() > 0.1
    assert b.lower.mean() < exact.mean() < b.upper.mean()


def test_schedule():
    for kind in ("sigmoid", "linear"):
        betas = schedule(50, kind)
        assert betas.shape == (51,) and betas.dtype == torch.float64
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    s = schedule(100)
    assert s.diff()[0] < s.diff()[50] > s.diff()[-1]  # denser at both ends
    with pytest.raises(ConfigError, match="schedule"):
        schedule(10, "cosine")


def test_ais_is_reproducible_and_leaves_the_model_alone():
    vae, x = toy_vae(0, 1)
    vae.train()
    state = torch.random.get_rng_state()
    a = ais(vae, x, num_steps=10, num_chains=4, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert vae.training and all(p.requires_grad for p in vae.parameters())
    assert torch.equal(ais(vae, x, num_steps=10, num_chains=4, seed=7).log_weights, a.log_weights)
    b = ais(vae, x, num_steps=10, num_chains=4, seed=7, chunk_size=8)  # 2 points per chunk
    assert b.log_px.shape == a.log_px.shape and torch.isfinite(b.log_px).all()
    assert a.log_weights.shape == (4, x.shape[0])
    assert a.acceptance_by_step.shape == (9,)
    assert set(a.summary()) >= {"log_likelihood", "ess_mean", "acceptance_mean", "seconds_per_point"}


def test_ais_progress_counts_the_points_as_chunks_finish(monkeypatch):
    import pyro_vae.infer.ais as ais_module

    bars, real = [], ais_module.progress_bar

    def recording(**options):
        assert options["enabled"] is True
        bars.append(real(**options))
        updates = []
        update = bars[-1].update
        bars[-1].update = lambda n: (updates.append(n), update(n))
        bars[-1].updates = updates
        return bars[-1]

    monkeypatch.setattr(ais_module, "progress_bar", recording)
    vae, x = toy_vae(0, 1)
    ais(vae, x, num_steps=5, num_chains=4, chunk_size=8, progress=True)  # 2 points per chunk
    (bar,) = bars
    assert bar.updates == [2] * (x.shape[0] // 2) + [x.shape[0] % 2] * (x.shape[0] % 2)
    assert bar.n == x.shape[0]


@pytest.mark.parametrize(
    "kwargs",
    [{"num_steps": 0}, {"num_chains": 0}, {"num_leapfrog": 0}, {"initial": "posterior"}, {"chunk_size": 0}],
)
def test_ais_rejects_bad_options(kwargs):
    vae, x = toy_vae(0, 1)
    with pytest.raises(ValueError):
        ais(vae, x, **{"num_steps": 5, "num_chains": 2, **kwargs})


def test_evaluate_with_ais():
    vae, x = toy_vae(1, 1, n=N)
    exact = exact_log_px_1d(vae, x)
    r = pyro_vae.evaluate(vae, x, num_samples=100, method="ais", ais_steps=300, ais_chains=64)
    pw = r["pointwise"]
    assert r["method"] == "ais" and r["ais_steps"] == 300 and r["ais_chains"] == 64
    assert (pw["log_likelihood"].double() - exact).abs().max() < POINT_TOL
    assert r["log_likelihood"] == pytest.approx(pw["log_likelihood"].mean().item())
    for key in ("log_likelihood_se", "ais_ess", "ais_acceptance", "log_likelihood_importance"):
        assert pw[key].shape == (N,)
    assert 0.5 < r["ais_acceptance"] < 0.8 and 1 <= r["ais_ess"] <= 64
    assert r["log_likelihood"] >= r["elbo"]
    assert "bits_per_dim" in r  # recomputed from the AIS number
    with pytest.raises(ConfigError, match="method"):
        pyro_vae.evaluate(vae, x, method="nuts")
