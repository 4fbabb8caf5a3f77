"""The identities behind docs/kl_weighting.md, checked against hand-written objectives."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import VAE, make_elbo
from pyro_vae.distributions import likelihoods

D, L = 6, 3


def draws(vae: VAE, x: torch.Tensor, seed: int):
    """The guide's z (seeded as Pyro's loss will draw it) and the model run on it."""
    pyro.set_rng_seed(seed)
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    return guide, model


def flat_grad(loss: torch.Tensor, params) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)  # beta = 0: prior parameters unused
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params)])


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
@pytest.mark.parametrize("beta", [0.0, 0.3, 2.5])
def test_beta_scale_is_reconstruction_plus_beta_kl(prior, beta):
    vae = VAE(D, L, hidden=(8,), likelihood="continuous_bernoulli", prior=prior)
    x = torch.rand(10, D)
    params = list(vae.parameters())
    pyro.set_rng_seed(1)
    got = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta)

    guide, model = draws(vae, x, seed=1)
    z = guide.nodes["z"]["value"]
    recon = vae.decode(z).log_prob(x).sum()  # log p(x|z) built without the model's trace
    kl = (guide.nodes["z"]["fn"].log_prob(z) - vae.prior().log_prob(z)).sum()
    want = -(recon - beta * kl)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(flat_grad(got, params), flat_grad(want, params))
    if beta != 1.0:  # the weight matters: it is not the plain ELBO
        assert not torch.isclose(got, -(recon - kl))


@pytest.mark.parametrize("lam", [1e-4, 0.05, 2.0])
def test_mse_plus_lambda_kl_is_a_fixed_sigma_gaussian(lam):
    r"""mean_n [MSE_n + lambda KL_n] * D / (2 sigma^2) = -ELBO/n - (D/2) log(2 pi sigma^2), sigma^2 = D lambda / 2."""
    sigma = math.sqrt(D * lam / 2)
    vae = VAE(D, L, hidden=(8,), likelihood=likelihoods.GaussianFixed(sigma))
    x = 3.0 * torch.randn(12, D)
    params = list(vae.parameters())
    pyro.set_rng_seed(2)
    neg_elbo = make_elbo("elbo_analytic").differentiable_loss(vae.model, vae.guide, x) / len(x)

    guide, _ = draws(vae, x, seed=2)
    z = guide.nodes["z"]["value"]
    loc, scale = vae.encode(x)
    mse = (x - vae.decoder(z).squeeze(-2)).pow(2).mean(-1)
    kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1)  # KL(N(loc, scale^2) || N(0, I))
    hand = (mse + lam * kl).mean()

    factor = D / (2 * sigma**2)
    torch.testing.assert_close(neg_elbo, factor * hand + 0.5 * D * math.log(2 * math.pi * sigma**2))
    g_elbo, g_hand = flat_grad(neg_elbo, params), flat_grad(hand, params)
    torch.testing.assert_close(g_elbo, factor * g_hand, rtol=1e-4, atol=1e-6 * g_elbo.abs().max().item())
    if lam < 0.01:
        return  # with a tiny sigma the KL hardly moves the gradient, whatever the exact value
    # A different sigma gives different gradient directions: the identity pins sigma down.
    other = VAE(D, L, hidden=(8,), likelihood=likelihoods.GaussianFixed(2 * sigma))
    other.load_state_dict(vae.state_dict())
    pyro.set_rng_seed(2)
    loss_other = make_elbo("elbo_analytic").differentiable_loss(other.model, other.guide, x) / len(x)
    g_other = flat_grad(loss_other, list(other.parameters()))
    cosine = torch.nn.functional.cosine_similarity(g_other, g_hand, dim=0)
    assert cosine < 0.9999


def test_averaging_over_features_is_beta_equal_to_d_divided_by_d():
    vae = VAE(D, L, hidden=(8,), likelihood="bernoulli")
    x = torch.randint(0, 2, (9, D)).float()
    guide, model = draws(vae, x, seed=4)
    z = guide.nodes["z"]["value"]
    per_feature = model.nodes["x"]["fn"].base_dist.log_prob(x)  # (n, D)
    kl = guide.nodes["z"]["fn"].log_prob(z) - vae.prior().log_prob(z)
    averaged = (-per_feature.mean(-1) + kl).sum()
    pyro.set_rng_seed(4)
    beta_d = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, float(D))
    torch.testing.assert_close(averaged, beta_d / D)
