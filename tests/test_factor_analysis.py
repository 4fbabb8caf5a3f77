r"""A linear-Gaussian VAE is factor analysis: check it against closed forms.

``VAE(D, L, hidden=(), likelihood="gaussian_shared", prior="standard_normal")`` is

.. math::
    z \sim \mathcal N(0, I_L), \qquad x \mid z \sim \mathcal N(W z + b, \Psi), \qquad
    p(x) = \mathcal N(x; b, W W^\top + \Psi),

with :math:`W, b` the decoder's single ``nn.Linear`` and :math:`\Psi = \operatorname{diag}(
\text{scale}^2)`. The exact posterior is Gaussian,
:math:`\Sigma = (I + W^\top \Psi^{-1} W)^{-1}`, :math:`\mu(x) = \Sigma W^\top \Psi^{-1}(x - b)`,
linear in ``x`` as the linear encoder is.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from sklearn.decomposition import FactorAnalysis

import pyro_vae

D, L = 6, 2


def fa_parameters(vae):
    lin = vae.decoder.net[0]
    assert isinstance(lin, torch.nn.Linear) and len(vae.decoder.net) == 1
    assert lin.weight.shape == (D, L)
    w = lin.weight.detach().double()
    b = lin.bias.detach().double()
    psi = vae.likelihood.scale.detach().double() ** 2
    return w, b, psi


def exact_log_px(vae, x):
    w, b, psi = fa_parameters(vae)
    return dist.MultivariateNormal(b, w @ w.T + torch.diag(psi)).log_prob(x.double())


def exact_posterior(vae):
    """(Sigma, A, c) with q*(z|x) = N(A x + c, Sigma)."""
    w, b, psi = fa_parameters(vae)
    sigma = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + w.T @ (w / psi[:, None]))
    a = sigma @ w.T / psi
    return sigma, a, -a @ b


def closed_form_elbo(vae, x):
    r"""The ELBO of the encoder's diagonal Gaussian q in closed form, per point.

    :math:`E_q \log \mathcal N(x; Wz+b, \Psi) = \log \mathcal N(x; W\mu+b, \Psi)
    - \frac12 \sum_d (W \operatorname{diag}(s^2) W^\top)_{dd} / \Psi_d`, minus the Gaussian KL.
    """
    w, b, psi = fa_parameters(vae)
    with torch.no_grad():
        loc, scale = (t.double() for t in vae.encoder(x))
    mean = loc @ w.T + b
    recon = dist.Normal(mean, psi.sqrt()).log_prob(x.double()).sum(-1)
    recon = recon - 0.5 * ((scale**2) @ (w**2).T / psi).sum(-1)
    kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    return recon - kl


def assert_elbo_matches_closed_form(result, vae, x):
    """The reported ELBO's reconstruction is a K-sample Monte Carlo average, so each point
    carries an error of std(log p(x|z)) / sqrt(K) (up to ~0.03 nats here, per point); the
    mean over points is checked tightly, single points loosely."""
    diff = result["pointwise"]["elbo"].double() - closed_form_elbo(vae, x)
    assert abs(diff.mean()) < 0.01, diff.mean()
    assert diff.abs().max() < 0.15, diff.abs().max()


def linear_vae(seed: int) -> pyro_vae.VAE:
    torch.manual_seed(seed)
    return pyro_vae.VAE(D, L, hidden=(), likelihood="gaussian_shared", prior="standard_normal")


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


# --------------------------------------------------------------------------- untrained


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluator_with_a_random_encoder_is_a_lower_estimate_of_the_exact_marginal(seed):
    """A random linear encoder is a poor proposal: its scales are often far narrower than the
    posterior's (sigma_q < sigma_post / sqrt(2) gives weights of infinite variance), so the
    estimate sits well below log p(x): measured over seeds 0-4, 0.2-0.4 nats on average at
    K = 5000, single points up to 26 nats low and, when a rare large weight is hit, up to
    1.5 nats high. A per-point tolerance is therefore meaningless here; what must hold is
    that the estimate is not above the exact value on average, that it is the tighter bound
    (well above the ELBO, which is 1-5 nats low), and that it improves with K. The ELBO it
    reports agrees on average with its closed form."""
    vae = linear_vae(seed)
    x = vae.sample(200)
    exact = exact_log_px(vae, x)
    r5000 = pyro_vae.evaluate(vae, x, num_samples=5000)
    est = r5000["pointwise"]["log_likelihood"].double()
    err = est - exact
    assert err.mean() <= 0.02
    assert err.mean() > -0.6
    elbo = r5000["pointwise"]["elbo"].double()
    assert (exact - elbo).mean() > 0.5  # the ELBO is a loose bound with this encoder
    assert est.mean() > elbo.mean() + 0.5
    assert abs((elbo - closed_form_elbo(vae, x)).mean()) < 0.02
    r50 = pyro_vae.evaluate(vae, x, num_samples=50)
    assert r5000["log_likelihood"] > r50["log_likelihood"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluator_with_the_exact_posterior_mean_matches_the_exact_marginal(seed):
    """Set the linear encoder's mean to the exact posterior mean and its (constant) scale to
    1.25 times the exact posterior's marginal standard deviations: the proposal covers the
    posterior and the weights are well behaved. Measured over seeds 0-4, the delta-method
    standard error of each estimate at K = 5000 is at most 0.0072 nats, so 0.04 per point is
    over 5 standard errors; the mean over 200 points has a standard error below 0.001."""
    vae = linear_vae(seed)
    sigma, a, c = exact_posterior(vae)
    q_scale = 1.25 * sigma.diagonal().sqrt()
    with torch.no_grad():
        lin = vae.encoder.net[0]
        lin.weight[:L] = a.float()
        lin.bias[:L] = c.float()
        lin.weight[L:].zero_()
        lin.bias[L:] = torch.tensor([_inverse_softplus(s - vae.encoder.min_scale) for s in q_scale.tolist()])
    x = vae.sample(200)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
    torch.testing.assert_close(loc.double(), x.double() @ a.T + c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scale.double(), q_scale.expand_as(scale), rtol=1e-5, atol=1e-6)

    exact = exact_log_px(vae, x)
    result = pyro_vae.evaluate(vae, x, num_samples=5000)
    err = result["pointwise"]["log_likelihood"].double() - exact
    assert err.abs().max() < 0.04, err
    assert abs(err.mean()) < 0.003
    # the ELBO of this (wider than optimal) q, against its closed form
    assert_elbo_matches_closed_form(result, vae, x)
    assert (exact - result["pointwise"]["elbo"].double()).mean() > 0.05


# --------------------------------------------------------------------------- trained


@pytest.fixture(scope="module")
def fa_data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, L, generator=g)
    b = torch.randn(D, generator=g)
    noise_std = 0.3 + 0.7 * torch.rand(D, generator=g)  # heteroscedastic

    def draw(n):
        z = torch.randn(n, L, generator=g)
        return z @ w.T + b + noise_std * torch.randn(n, D, generator=g)

    return draw(3000), draw(1000)


@pytest.fixture(scope="module")
def trained(fa_data):
    x_train, _ = fa_data
    vae = linear_vae(0)
    history = pyro_vae.fit(
        vae, x_train, epochs=200, batch_size=200, lr=5e-3, loss="elbo_analytic", progress=False, seed=0
    )
    fa = FactorAnalysis(n_components=L).fit(x_train.numpy())
    return vae, fa, history


def test_training_reaches_the_exact_factor_analysis_likelihood(fa_data, trained):
    _, x_test = fa_data
    vae, fa, history = trained
    target = fa.score(x_test.numpy())  # average exact log-likelihood of the ML fit
    assert history["train_loss"][-1] < history["train_loss"][0]

    result = pyro_vae.evaluate(vae, x_test, num_samples=2000)
    exact = exact_log_px(vae, x_test)
    assert abs(exact.mean().item() - target) < 0.02
    assert abs(result["log_likelihood"] - target) < 0.02
    # evaluator against the closed form on the trained model, point by point
    err = result["pointwise"]["log_likelihood"].double() - exact
    assert err.abs().mean() < 0.005
    assert err.abs().max() < 0.05  # a tail statistic over 1000 points: looser
    # the ELBO is tight: with W rotated so that W^T Psi^-1 W is diagonal, the exact
    # posterior is a diagonal Gaussian that the linear encoder can represent
    assert result["elbo"] <= exact.mean().item() + 1e-3
    assert result["log_likelihood"] - result["elbo"] < 0.02
    assert_elbo_matches_closed_form(result, vae, x_test)


def test_trained_parameters_match_the_factor_analysis_fit(trained):
    vae, fa, _ = trained
    w, b, psi = fa_parameters(vae)
    fa_cov = torch.as_tensor(fa.get_covariance())
    cov = w @ w.T + torch.diag(psi)
    torch.testing.assert_close(cov, fa_cov, rtol=0, atol=0.05 * fa_cov.abs().max().item())
    torch.testing.assert_close(b, torch.as_tensor(fa.mean_), rtol=0, atol=0.05)
    torch.testing.assert_close(psi, torch.as_tensor(fa.noise_variance_), rtol=0.15, atol=0.01)


def test_trained_encoder_is_the_exact_posterior(fa_data, trained):
    _, x_test = fa_data
    vae, _, _ = trained
    sigma, a, c = exact_posterior(vae)
    # the learned rotation makes the exact posterior (nearly) uncorrelated
    corr = sigma[0, 1] / (sigma[0, 0] * sigma[1, 1]).sqrt()
    assert abs(corr) < 0.05
    with torch.no_grad():
        loc, scale = (t.double() for t in vae.encoder(x_test))
    torch.testing.assert_close(scale, sigma.diagonal().sqrt().expand_as(scale), rtol=0.1, atol=0)
    # KL(q(z|x) || p(z|x)) in closed form is exactly the gap log p(x) - ELBO ...
    q = dist.MultivariateNormal(loc, scale_tril=torch.diag_embed(scale))
    posterior = dist.MultivariateNormal(x_test.double() @ a.T + c, covariance_matrix=sigma)
    kl = torch.distributions.kl_divergence(q, posterior)
    gap = exact_log_px(vae, x_test) - closed_form_elbo(vae, x_test)
    torch.testing.assert_close(kl, gap, rtol=1e-6, atol=1e-6)
    # ... and it is small: the amortised linear encoder has found the exact posterior
    assert kl.mean() < 0.01
    assert kl.max() < 0.15  # the worst of 1000 points


# --------------------------------------------------------------------------- your own linear networks


def custom_linear_vae(seed: int) -> pyro_vae.VAE:
    """Factor analysis from the user's own modules: a linear encoder to (loc, raw scale) and a
    linear decoder to (B, num_params = 1, D), through the network contract."""
    torch.manual_seed(seed)
    encoder = torch.nn.Linear(D, 2 * L)
    decoder = torch.nn.Sequential(torch.nn.Linear(L, D), torch.nn.Unflatten(1, (1, D)))
    return pyro_vae.VAE(
        D, L, encoder=encoder, decoder=decoder, likelihood="gaussian_shared", prior="standard_normal"
    )


def test_a_custom_linear_network_reaches_the_exact_factor_analysis_likelihood(fa_data, trained):
    """The same training as the built-in linear VAE's (``trained``): fit draws the initial
    weights from the seed, module by module, so the custom pair starts, trains and scores as
    the built-in one does, and both reach the exact likelihood of the ML factor analysis."""
    x_train, x_test = fa_data
    builtin, fa, _ = trained
    vae = custom_linear_vae(1)
    assert vae.network == "custom"
    pyro_vae.fit(
        vae, x_train, epochs=200, batch_size=200, lr=5e-3, loss="elbo_analytic", progress=False, seed=0
    )
    lin = vae.decoder.net[0]
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    psi = vae.likelihood.scale.detach().double() ** 2
    exact = dist.MultivariateNormal(b, w @ w.T + torch.diag(psi)).log_prob(x_test.double())
    result = pyro_vae.evaluate(vae, x_test, num_samples=2000)
    target = fa.score(x_test.numpy())
    assert abs(exact.mean().item() - target) < 0.02
    assert abs(result["log_likelihood"] - target) < 0.02
    err = result["pointwise"]["log_likelihood"].double() - exact
    assert err.abs().mean() < 0.005 and err.abs().max() < 0.05
    reference = pyro_vae.evaluate(builtin, x_test, num_samples=2000)
    assert abs(result["log_likelihood"] - reference["log_likelihood"]) < 1e-3
