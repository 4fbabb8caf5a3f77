"""gaussian_lowrank against a dense multivariate normal: log densities, gradients, marginals of observed cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as td
from torch.nn import functional as F

import pyro_vae
from pyro_vae.data.tables import load_table
from pyro_vae.distributions import likelihoods
from pyro_vae.errors import ConfigError
from tests.test_step import loss_and_grads

D, RANK = 5, 2


def make(rank: int = RANK, d: int = D, **options) -> likelihoods.Likelihood:
    lik = likelihoods.create("gaussian_lowrank", rank=rank, **options)
    lik.setup(d)
    return lik


def dense(params: torch.Tensor, min_scale: float = 1e-3) -> td.MultivariateNormal:
    """The same covariance written out: W W^T + diag(sigma^2), from the raw decoder outputs."""
    loc, raw, *rows = params.unbind(-2)
    factor = torch.stack(rows, -1)
    cov = factor @ factor.mT + torch.diag_embed((F.softplus(raw) + min_scale) ** 2)
    return td.MultivariateNormal(loc, cov)


def params_for(*prefix: int, rank: int = RANK, d: int = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(*prefix, 2 + rank, d, generator=g, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("prefix", [(4,), (3, 4)], ids=["batch", "draws-batch"])
def test_log_density_and_gradients_equal_the_dense_normal(prefix):
    params = params_for(*prefix)
    x = torch.randn(4, D, dtype=torch.float64)  # broadcast against draws of z, as in evaluation
    got = make()(params).log_prob(x)
    assert got.shape == (*prefix, D)
    want = dense(params).log_prob(x)
    torch.testing.assert_close(got.sum(-1), want)
    (g_got,) = torch.autograd.grad(got.sum(), params)
    (g_want,) = torch.autograd.grad(want.sum(), params)
    torch.testing.assert_close(g_got, g_want)


def test_masked_cells_are_marginalised_exactly():
    params = params_for(3, 4)
    x = torch.randn(4, D, dtype=torch.float64)
    observed = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool
    )
    got = make()(params).mask(observed).log_prob(x)
    assert (got[..., ~observed] == 0).all()
    full = dense(params)
    for n in range(4):
        o = observed[n]
        if not o.any():
            want = torch.zeros(3, dtype=torch.float64)
        else:
            want = td.MultivariateNormal(
                full.loc[:, n][:, o], full.covariance_matrix[:, n][:, o][:, :, o]
            ).log_prob(x[n, o])
        torch.testing.assert_close(got[:, n].sum(-1), want)
        # the dropped cells' parameters get no gradient; the kept ones get the marginal's
        (g_got,) = torch.autograd.grad(got[:, n].sum(), params, retain_graph=True)
        (g_want,) = (
            torch.autograd.grad(want.sum(), params, retain_graph=True)
            if o.any()
            else (torch.zeros_like(params),)
        )
        torch.testing.assert_close(g_got, g_want)


def test_a_block_inside_columns_is_one_joint_normal_and_marginalises_its_missing_cells():
    spec = {"name": "columns", "options": {"columns": ["gaussian_lowrank", "bernoulli", "gaussian_lowrank"]}}
    lik = likelihoods.create(spec)
    lik.setup(3)
    assert lik.num_params == 2 + RANK
    params = torch.randn(6, lik.num_params, 3, dtype=torch.float64)
    x = torch.stack([torch.randn(6), torch.bernoulli(torch.full((6,), 0.5)), torch.randn(6)], 1).double()
    block = dense(params[..., [0, 2]])
    bern = td.Bernoulli(logits=params[..., 0, 1])
    got = lik(params).log_prob(x)
    torch.testing.assert_close(got.sum(-1), block.log_prob(x[:, [0, 2]]) + bern.log_prob(x[:, 1]))
    observed = torch.ones(6, 3, dtype=torch.bool)
    observed[:, 2] = False
    masked = lik(params).mask(observed).log_prob(x)
    marginal = td.Normal(block.loc[:, 0], block.covariance_matrix[:, 0, 0].sqrt()).log_prob(x[:, 0])
    torch.testing.assert_close(masked.sum(-1), marginal + bern.log_prob(x[:, 1]))


def test_draws_have_the_covariance():
    params = params_for(1, d=3).detach()[0]
    torch.manual_seed(0)
    draws = make(d=3)(params).sample((40000,))
    assert draws.shape == (40000, 3)
    torch.testing.assert_close(torch.cov(draws.T), dense(params).covariance_matrix, atol=0.1, rtol=0.05)
    torch.testing.assert_close(make(d=3)(params).mean, params[0])


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing-cells"])
def test_replayed_step_equals_trace_elbo(missing):
    torch.manual_seed(0)
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood="gaussian_lowrank", missing=missing)
    x = torch.randn(16, 6)
    if missing:
        x[::3, 1] = float("nan")
        x[1, :] = float("nan")
    expected, expected_grads, _ = loss_and_grads(vae, x, 1.0, replay=False)
    got, grads, objective = loss_and_grads(vae, x, 1.0, replay=True)
    assert all(objective.replayed.verdicts.values())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for name, g in expected_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_fits_and_evaluates_a_table_with_missing_cells():
    torch.manual_seed(0)
    u = torch.randn(200, 1)
    x = torch.cat([u, 2 * u + 0.01 * torch.randn(200, 1), torch.randn(200, 2)], 1)
    x[::7, 1] = float("nan")
    vae = pyro_vae.VAE(4, 1, hidden=(16,), likelihood="gaussian_lowrank", missing=True)
    pyro_vae.fit(vae, x, epochs=2, progress=False, seed=0)
    m = pyro_vae.evaluate(vae, x[:50], num_samples=8, seed=0)
    assert torch.isfinite(torch.as_tensor(m["log_likelihood"]))


def test_images_are_refused_with_the_fix():
    lik = likelihoods.create("gaussian_lowrank")
    with pytest.raises(ConfigError, match="vectors.*flatten"):
        lik.setup((1, 4, 4))


def test_a_tables_real_columns_given_gaussian_lowrank_are_standardized_as_one_block():
    rng = np.random.default_rng(0)
    u = rng.normal(size=300)
    table = np.stack([100 + 10 * u, 5 * u + rng.normal(size=300), rng.integers(0, 2, 300)], 1)
    splits = load_table(
        table, names=["a", "b", "flag"], column_likelihoods={"a": "gaussian_lowrank", "b": "gaussian_lowrank"}
    )
    assert [c.standardize for c in splits.columns.columns] == [True, True, False]
    lik = likelihoods.create(splits.columns.likelihood_spec())
    assert [p.name for p in lik.parts] == ["gaussian_lowrank", "bernoulli"]


def conditional(mvn: td.MultivariateNormal, x: torch.Tensor, observed: torch.Tensor):
    """The dense Gaussian conditional of the missing cells: mean and covariance."""
    o, m = observed, ~observed
    cov, mu = mvn.covariance_matrix, mvn.loc
    gain = cov[m][:, o] @ torch.linalg.inv(cov[o][:, o])
    return mu[m] + gain @ (x[o] - mu[o]), cov[m][:, m] - gain @ cov[o][:, m]


def test_the_missing_cells_given_the_observed_are_the_gaussian_conditional():
    params = params_for(3, d=6).detach()
    x = torch.randn(3, 6, dtype=torch.float64)
    observed = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    lik = make(d=6)
    got = lik.given(lik(params), x, observed)
    full = dense(params)
    for n in range(3):
        mean, cov = conditional(
            td.MultivariateNormal(full.loc[n], full.covariance_matrix[n]), x[n], observed[n]
        )
        m = ~observed[n]
        torch.testing.assert_close(got.loc[n][m], mean)
        factor = got.cov_factor[n][m]
        torch.testing.assert_close(factor @ factor.T + torch.diag(got.cov_diag[n][m]), cov)


def test_impute_fills_with_the_conditional_mean_and_draws_from_the_conditional():
    """A decoder that ignores z (weights 0, biases set): every draw of z gives the same
    correlated Gaussian, so imputation must return its conditional mean exactly."""
    torch.manual_seed(0)
    vae = pyro_vae.VAE(3, 1, hidden=(4,), likelihood="gaussian_lowrank", missing=True)
    params = torch.tensor([[1.0, -2.0, 0.5], [-3.0, -3.0, -3.0], [2.0, 1.9, -1.0], [0.1, -0.2, 0.3]])
    last = vae.decoder.net[-1]
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.zero_()
        last.bias.copy_(params.reshape(-1))
    x = torch.tensor([[2.0, float("nan"), float("nan")], [float("nan"), 0.0, 1.0]])
    assert torch.equal(vae.decoder(torch.zeros(1, 1))[0], params)  # the decoder's output layout
    mvn = dense(params.double())
    filled = vae.impute(x, num_samples=16)
    for n in range(2):
        o = ~torch.isnan(x[n])
        mean, _ = conditional(mvn, x[n].double(), o)
        torch.testing.assert_close(filled[n][~o].double(), mean, rtol=1e-5, atol=1e-5)
    draws = vae.impute(x[:1].expand(4000, 3), num_samples=4, draws=True)[:, :, 1:].reshape(-1, 2).double()
    mean, cov = conditional(mvn, x[0].double(), ~torch.isnan(x[0]))
    torch.testing.assert_close(draws.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.05, rtol=0.05)
