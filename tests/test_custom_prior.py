r"""A prior defined by the user with nothing but ``forward()`` works everywhere.

:class:`CorrelatedGaussian` is :math:`z \sim \mathcal N(m, LL^\top)` with a learned mean and
Cholesky factor: not factorised, not a mixture, with no ``marginal_log_prob`` of its own, so
the KL per dimension relies on :meth:`pyro_vae.distributions.priors.Prior.marginal_log_prob`, the kernel
estimate of the marginals. The marginals of a correlated Gaussian are Gaussian,
:math:`z_j \sim \mathcal N(m_j, (LL^\top)_{jj})`, which gives that estimate a closed form to
meet.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyro_vae
from pyro_vae import diagnostics
from pyro_vae.distributions import priors

D, L = 4, 2


class CorrelatedGaussian(priors.Prior):
    r""":math:`z \sim \mathcal N(m, LL^\top)`, :math:`L` lower triangular with a positive diagonal."""

    def setup(self, latent_dim, input_dim, encoder):
        super().setup(latent_dim, input_dim, encoder)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_tril = nn.Parameter(torch.zeros(latent_dim, latent_dim))  # L = I at the start

    def scale_tril(self) -> torch.Tensor:
        return torch.tril(self.raw_tril, -1) + torch.diag_embed(self.raw_tril.diagonal().exp())

    def forward(self):
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril())


def correlated_data(n: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, L, generator=g)
    w = torch.tensor([[1.0, 0.5, -0.3, 0.8], [0.2, -1.0, 0.7, 0.4]])
    return z @ w + 0.3 * torch.randn(n, D, generator=g)


def set_prior(prior: CorrelatedGaussian, loc, tril) -> None:
    with torch.no_grad():
        prior.loc.copy_(torch.tensor(loc))
        tril = torch.tensor(tril)
        prior.raw_tril.copy_(torch.tril(tril, -1) + torch.diag_embed(tril.diagonal().log()))


@pytest.fixture
def registered():
    """The class under a test-only name (compare_priors and saved runs rebuild priors by name)."""
    priors.register("test_correlated_gaussian")(CorrelatedGaussian)
    try:
        yield "test_correlated_gaussian"
    finally:
        priors.REGISTRY.unregister("test_correlated_gaussian")
    assert "test_correlated_gaussian" not in priors.names()
    assert CorrelatedGaussian.name == "CorrelatedGaussian"


def test_kernel_marginals_of_a_correlated_gaussian_meet_the_closed_form():
    r"""The default marginals against :math:`\mathcal N(m_j, \Sigma_{jj})`.

    With :math:`M = 4096` draws and bandwidth :math:`h = 0.53\,\sigma M^{-1/5} \approx 0.10\sigma`,
    the kernel estimate has relative standard error :math:`(2\sqrt\pi M h p)^{-1/2}`,
    0.042 at the mode and 0.073 at 1.5 sd, and a relative bias :math:`\tfrac12 (h/\sigma)^2(u^2 - 1)`
    of at most 0.006 there. Integrating the absolute error over the line gives an expected L1
    distance of :math:`\sqrt{2/\pi}\int\sqrt{p}\,/\sqrt{2\sqrt\pi M h} \approx 0.047` (its spread,
    over about 60 independent bandwidths, is below 0.01), so 0.1 is five spreads above it, while
    the marginals of the uncorrelated base law or of the wrong scale are 0.3 or more away.
    Pointwise within 1.5 sd, 0.25 in log density is over three standard errors.
    """
    prior = CorrelatedGaussian()
    prior.setup(L, D, None)
    set_prior(prior, [0.5, -1.0], [[1.5, 0.0], [1.2, 0.5]])
    sd = torch.tensor([1.5, math.sqrt(1.2**2 + 0.5**2)])  # diagonal of L L^T: 2.25 and 1.69
    exact = dist.Normal(prior.loc.detach(), sd)
    assert abs(prior().covariance_matrix[0, 1].item() / (sd[0] * sd[1]).item() - 0.923) < 1e-3

    grid = torch.linspace(-6.0, 6.0, 2401).unsqueeze(-1) * sd + prior.loc.detach()  # (G, L)
    state = torch.get_rng_state()
    estimate = prior.marginal_log_prob(grid)
    assert torch.equal(state, torch.get_rng_state())  # the global random stream is untouched
    assert estimate.shape == grid.shape
    truth = exact.log_prob(grid)
    step = grid[1] - grid[0]
    l1 = ((estimate.exp() - truth.exp()).abs().sum(0) * step).tolist()
    assert max(l1) < 0.1, l1
    bulk = ((grid - prior.loc.detach()) / sd).abs() <= 1.5
    assert (estimate - truth)[bulk].abs().max() < 0.25
    wrong = dist.Normal(0.0, 1.0).log_prob(grid).exp()  # the base law's marginals
    assert min(((wrong - truth.exp()).abs().sum(0) * step).tolist()) > 0.3
    # Mean and sd of the estimate: the draws' (standard error sd / 64) and sd sqrt(1 + (h/sd)^2).
    p = estimate.exp() * step
    mean = (p * grid).sum(0)
    spread = ((p * (grid - mean) ** 2).sum(0)).sqrt()
    assert ((mean - prior.loc.detach()).abs() / sd < 4 / 64).all()
    assert ((spread / sd - 1).abs() < 0.05).all()

    # Cached per parameter state: a second call reuses the table, an update replaces it.
    table = prior._marginal_table()
    assert prior._marginal_table() is table
    set_prior(prior, [0.0, 0.0], [[1.0, 0.0], [0.0, 2.0]])
    assert prior._marginal_table() is not table
    moved = prior.marginal_log_prob(torch.zeros(1, L))
    expected = dist.Normal(0.0, torch.tensor([1.0, 2.0])).log_prob(torch.zeros(1, L))
    assert (moved - expected).abs().max() < 0.15  # three standard errors at the mode


def test_an_instance_trains_evaluates_and_is_diagnosed():
    torch.manual_seed(0)
    x = correlated_data()
    prior = CorrelatedGaussian()
    vae = pyro_vae.VAE(D, L, hidden=(16,), likelihood="gaussian", prior=prior)
    assert vae.prior is prior and prior.name == "CorrelatedGaussian"
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    pyro_vae.fit(vae, x, epochs=3, batch_size=50, lr=1e-2, progress=False)
    assert any(not torch.equal(before[k], v) for k, v in prior.state_dict().items())  # it learned

    result = pyro_vae.evaluate(vae, x, num_samples=200)
    for key in ("log_likelihood", "elbo", "kl", "reconstruction"):
        assert math.isfinite(result[key]), key
    assert result["elbo"] <= result["log_likelihood"] + 0.05
    # KL per dimension against the kernel marginals, beside the closed form against the exact
    # marginals N(m_j, S_jj) for the encoder's N(mu, s^2). The Monte Carlo part (100 draws per
    # point, 200 points) has a standard error near 0.01; the kernel estimate's error in log
    # density is 0.04-0.07 (one standard error, within 1.5 sd) at a point and smaller averaged
    # over q, which is about as wide as the prior here, plus a bias of +0.005 nats at the mode.
    kl_per_dim = torch.tensor(result["kl_per_dim"])
    assert kl_per_dim.shape == (L,) and torch.isfinite(kl_per_dim).all()
    with torch.no_grad():
        mu, s = vae.encoder(x)
        m, sd = prior.loc, prior().covariance_matrix.diagonal().sqrt()
        closed = (torch.log(sd / s) + (s**2 + (mu - m) ** 2) / (2 * sd**2) - 0.5).mean(0)
    assert (kl_per_dim - closed).abs().max() < 0.1, (kl_per_dim, closed)

    idata = diagnostics.to_inference_data(vae, x[:20], 100, num_predictive=5, num_prior=50)
    assert idata.prior["z"].shape == (1, 50, L)
    assert idata.attrs["prior"] == "CorrelatedGaussian"
    assert np.isfinite(idata.sample_stats["log_weight"].values).all()
    psis = diagnostics.psis_diagnostic(vae, x[:20], 200)
    assert psis.khat.shape == (20,) and not np.isposinf(psis.khat).any()
    again = diagnostics.psis_from_inference_data(idata)
    assert again.khat.shape == (20,)


def test_a_registered_forward_only_prior_is_compared_saved_and_loaded(registered, tmp_path):
    from pyro_vae.app.compare import compare_priors, default_config

    cfg = default_config()
    cfg.model.hidden = [16]
    cfg.train.epochs, cfg.train.patience, cfg.train.num_threads = 3, None, 1
    cfg.eval.num_samples = 50
    out = tmp_path / "cmp"
    result = compare_priors(cfg, [registered], out, progress=False, echo=lambda *a, **k: None)
    assert not result.failed, [r.error for r in result.failed]
    (row,) = json.loads((out / "comparison.json").read_text())["rows"]
    assert row["prior"] == registered and row["error"] is None
    assert all(math.isfinite(row[k]) for k in ("log_likelihood", "elbo", "kl", "reconstruction"))
    assert (out / "prior_vs_aggregate_posterior.png").is_file()
    run_dir = out / "runs" / registered
    vae = pyro_vae.VAE.load(run_dir)
    assert type(vae.prior) is CorrelatedGaussian and vae.prior.spec() == {"name": registered, "options": {}}
