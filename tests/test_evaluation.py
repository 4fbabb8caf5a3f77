"""Evaluation: the importance-sampled log p(x) against quadrature, and the reported parts.

Toy models have a 1-D or 2-D latent, so log p(x) = log ∫ p(x|z) p(z) dz can be computed
exactly (to ~1e-6) by trapezoid quadrature in float64 and compared with ``evaluate``.

The weights are random (seeded). Only the encoder's *scale* is fixed, to a constant 1.5:
with a random encoder the proposal can be narrower than the posterior, which makes the
importance weights heavy-tailed (infinite variance when sigma_q < sigma_post / sqrt(2)),
and then no sample size gives a tight comparison. A proposal wider than the posterior's
bulk keeps the weights bounded; at K = 20000 the delta-method standard error of each
estimate is then at most 0.009 nats for the models used here (seed 0), so a per-point
tolerance of 0.025 nats is about 3-5 standard errors, while the gap between the ELBO
and log p(x) in these models is 0.1-2 nats, so an estimator that returned anything
like the ELBO, or dropped a term, would fail.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyro_vae
from pyro_vae.errors import NonFiniteError, PyroVAEError
from pyro_vae.infer.evaluation import active_units, validation_elbo

Q_SCALE = 1.5
POINT_TOL = 0.025


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def toy_vae(seed: int, latent_dim: int, prior: str = "standard_normal", input_dim: int = 2, n: int = 5):
    """A random-weight VAE with a wide constant-scale encoder, and ``n`` points drawn from it."""
    torch.manual_seed(seed)
    vae = pyro_vae.VAE(input_dim, latent_dim, hidden=(16,), likelihood="gaussian", prior=prior)
    with torch.no_grad():
        last = vae.encoder.net[-1]
        last.weight[latent_dim:].zero_()
        last.bias[latent_dim:].fill_(_inverse_softplus(Q_SCALE - vae.encoder.min_scale))
    x = vae.sample(n)
    return vae, x


def log_integrand(vae, x, z):
    """log p(x|z) + log p(z) in float64 for a grid ``z`` of shape (..., L): returns (..., N)."""
    v = copy.deepcopy(vae).double()
    with torch.no_grad():
        return v.decode(z.unsqueeze(-2)).log_prob(x.double()) + v.prior().log_prob(z).unsqueeze(-1)


def exact_log_px_1d(vae, x, lim=10.0, n=20001):
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    logp = log_integrand(vae, x, g.unsqueeze(-1))  # (n, N)
    m = logp.amax(0)
    return m + torch.log(torch.trapezoid((logp - m).exp(), g, dim=0))


def exact_log_px_2d(vae, x, lim=8.0, n=401):
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)  # (n, n, 2)
    logp = log_integrand(vae, x, z)  # (n, n, N)
    m = logp.amax((0, 1))
    inner = torch.trapezoid((logp - m).exp(), g, dim=1)
    return m + torch.log(torch.trapezoid(inner, g, dim=0))


def check_against_exact(vae, x, exact):
    result = pyro_vae.evaluate(vae, x, num_samples=20000)
    est = result["pointwise"]["log_likelihood"].double()
    err = est - exact
    assert est.shape == (x.shape[0],)
    assert err.abs().max() < POINT_TOL, err
    assert err.abs().mean() < 0.01, err
    assert err.mean() < 0.005, err  # biased low: never systematically above the truth
    assert result["log_likelihood"] == pytest.approx(est.mean().item(), abs=1e-6)
    # the check discriminates: log p(x) is well above the ELBO in these models
    gap = exact - result["pointwise"]["elbo"].double()
    assert gap.min() > 0 and gap.mean() > 0.05, gap
    return result


def test_quadrature_is_accurate():
    vae, x = toy_vae(0, 1)
    exact = exact_log_px_1d(vae, x)
    torch.testing.assert_close(exact, exact_log_px_1d(vae, x, lim=14.0, n=40001), rtol=0, atol=1e-5)
    vae2, x2 = toy_vae(0, 2)
    exact2 = exact_log_px_2d(vae2, x2)
    torch.testing.assert_close(exact2, exact_log_px_2d(vae2, x2, lim=10.0, n=601), rtol=0, atol=1e-5)


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_log_likelihood_matches_quadrature_1d(prior):
    vae, x = toy_vae(0, 1, prior)
    check_against_exact(vae, x, exact_log_px_1d(vae, x))


@pytest.mark.parametrize("prior", ["standard_normal", "mixture"])
def test_log_likelihood_matches_quadrature_2d(prior):
    vae, x = toy_vae(0, 2, prior)
    check_against_exact(vae, x, exact_log_px_2d(vae, x))


def test_log_likelihood_bias_is_downward_for_few_samples():
    """log mean w is biased low (Jensen); with K = 2 the bias is clearly visible on average."""
    vae, x = toy_vae(1, 1, n=200)
    exact = exact_log_px_1d(vae, x)
    small = pyro_vae.evaluate(vae, x, num_samples=2)["pointwise"]["log_likelihood"].double()
    large = pyro_vae.evaluate(vae, x, num_samples=5000)["pointwise"]["log_likelihood"].double()
    diff = small - exact
    assert diff.mean() + 4 * diff.std() / math.sqrt(len(diff)) < 0
    assert (large - exact).mean() < 0.005
    assert (large - exact).mean() > diff.mean()


def test_evaluate_matches_hand_computed_importance_sampling_for_the_same_draws():
    vae, x = toy_vae(2, 2, n=7)
    k, seed = 50, 4
    result = pyro_vae.evaluate(vae, x, num_samples=k, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        q = dist.Normal(loc, scale)
        z = q.rsample((k,))  # the same draws as evaluate's vectorised guide
        log_px_z = vae.decode(z).log_prob(x)
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_w = log_px_z + log_pz - q.log_prob(z).sum(-1)
        log_px = torch.logsumexp(log_w, 0) - math.log(k)
        kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
        elbo = log_px_z.mean(0) - kl
    torch.testing.assert_close(result["pointwise"]["log_likelihood"], log_px, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result["pointwise"]["elbo"], elbo, rtol=1e-5, atol=1e-5)
    assert result["reconstruction"] == pytest.approx(log_px_z.mean().item(), rel=1e-5)
    assert result["kl"] == pytest.approx(kl.mean().item(), rel=1e-5)
    assert result["log_likelihood_se"] == pytest.approx(log_px.std().item() / math.sqrt(7), rel=1e-4)
    assert result["num_samples"] == k and result["num_points"] == 7


# --------------------------------------------------------------------------- chunking and K


def test_chunking_does_not_change_the_estimate_materially():
    vae, x = toy_vae(3, 2, n=300)
    default = pyro_vae.evaluate(vae, x, num_samples=500)["pointwise"]["log_likelihood"]
    chunked = pyro_vae.evaluate(vae, x, num_samples=500, chunk_size=64)["pointwise"]["log_likelihood"]
    diff = chunked - default
    assert not torch.equal(chunked, default)  # other draws ...
    assert diff.abs().max() < 0.3  # ... but the same estimate up to Monte Carlo error (K = 500)
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff)) + 1e-6


def test_single_sample_log_likelihood_is_an_unbiased_elbo_and_large_k_is_above_the_elbo():
    vae, x = toy_vae(4, 2, n=2000)
    one = pyro_vae.evaluate(vae, x, num_samples=1)
    # with K = 1, log w = log p(x|z) + log p(z) - log q(z|x) at the same z as the
    # reconstruction: its difference to the ELBO is the Monte Carlo error of the KL only
    diff = one["pointwise"]["log_likelihood"] - one["pointwise"]["elbo"]
    assert diff.abs().max() > 0
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
    many = pyro_vae.evaluate(vae, x[:200], num_samples=1000)
    ll, elbo = many["pointwise"]["log_likelihood"], many["pointwise"]["elbo"]
    assert many["log_likelihood"] > many["elbo"] + 0.05
    assert (ll >= elbo - 0.01).float().mean() > 0.98


# --------------------------------------------------------------------------- reported parts


def test_elbo_parts_and_closed_form_kl_per_dim():
    vae, x = toy_vae(5, 2, input_dim=3, n=40)
    result = pyro_vae.evaluate(vae, x, num_samples=200)
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"], abs=1e-5)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
    kl_dim = (0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log())).mean(0)
    assert len(result["kl_per_dim"]) == 2
    np.testing.assert_allclose(result["kl_per_dim"], kl_dim.numpy(), rtol=1e-5, atol=1e-6)
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-5)
    assert result["kl"] > 0


def test_monte_carlo_kl_for_a_mixture_prior():
    """No closed form: evaluate averages log q - log p over its samples."""
    vae, x = toy_vae(6, 2, prior="mixture", n=30)
    result = pyro_vae.evaluate(vae, x, num_samples=4000)
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"], abs=1e-5)
    torch.manual_seed(123)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        q = dist.Normal(loc, scale).to_event(1)
        z = q.sample((20000,))
        per_sample = (q.log_prob(z) - vae.prior().log_prob(z)).mean(-1)  # mean over points
    se = per_sample.std().item() * math.sqrt(1 / 20000 + 1 / 4000)
    assert abs(result["kl"] - per_sample.mean().item()) < 4 * se


def test_active_units_of_a_linear_encoder_with_two_dead_dimensions():
    torch.manual_seed(0)
    vae = pyro_vae.VAE(6, 4, hidden=(), likelihood="gaussian")
    with torch.no_grad():
        lin = vae.encoder.net[0]
        assert lin.weight.shape == (8, 6)  # rows 0..3: the mean; 4..7: the scale
        lin.weight[2:4].zero_()  # dims 2 and 3: the mean does not depend on x
        lin.bias[2:4] = torch.tensor([0.7, -1.3])
        lin.weight[0] = torch.tensor([1.0, 0.5, 0, 0, 0, 0])
        lin.weight[1] = torch.tensor([0, 0, 0.3, 0, 0, 0])  # Var = 0.09 > 0.01
    x = torch.randn(500, 6)
    result = pyro_vae.evaluate(vae, x, num_samples=5)
    assert result["active_units"] == 2
    with torch.no_grad():
        lin.weight[1].mul_(0.1)  # Var = 0.0009 < 0.01: no longer active
    assert pyro_vae.evaluate(vae, x, num_samples=5)["active_units"] == 1


def test_active_units_on_a_handmade_tensor():
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0])  # unbiased variance of c * signs: c^2 * 4/3
    cols = [c * signs for c in (0.0, math.sqrt(0.009 * 3 / 4), math.sqrt(0.011 * 3 / 4), 2.0)]
    means = torch.stack(cols, -1) + torch.tensor([5.0, -2.0, 0.3, 1.0])  # offsets do not matter
    torch.testing.assert_close(means.var(0), torch.tensor([0.0, 0.009, 0.011, 16 / 3]))
    assert active_units(means) == 2
    assert active_units(means, threshold=0.005) == 3
    assert active_units(means, threshold=10.0) == 0
    assert active_units(means[:1]) == 0  # one point: no variance


@pytest.mark.parametrize("jacobian", [0.0, -3.7, 12.5])
def test_bits_per_dim_for_a_continuous_likelihood(jacobian):
    vae, x = toy_vae(7, 1, input_dim=3, n=20)
    result = pyro_vae.evaluate(vae, x, num_samples=100, log_abs_det_jacobian=jacobian)
    expected = -(result["log_likelihood"] + jacobian) / (3 * math.log(2))
    assert result["bits_per_dim"] == pytest.approx(expected, rel=1e-6)


def test_no_bits_per_dim_for_a_discrete_likelihood():
    torch.manual_seed(0)
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood="bernoulli")
    x = (torch.rand(30, 6) < 0.3).float()
    result = pyro_vae.evaluate(vae, x, num_samples=100)
    assert "bits_per_dim" not in result
    # log probabilities of discrete data are at most 0
    assert (result["pointwise"]["log_likelihood"] <= 0).all()
    assert (result["pointwise"]["elbo"] <= result["pointwise"]["log_likelihood"] + 0.05).all()


# --------------------------------------------------------------------------- data types


@pytest.fixture
def small():
    vae, x = toy_vae(8, 2, input_dim=3, n=50)
    labels = torch.arange(50)
    return vae, x, labels


def _numbers(result):
    return (
        result["pointwise"]["log_likelihood"],
        result["pointwise"]["elbo"],
        result["kl_per_dim"],
        result["active_units"],
    )


def _assert_same(a, b):
    for u, v in zip(_numbers(a), _numbers(b)):
        if isinstance(u, torch.Tensor):
            torch.testing.assert_close(u, v)
        else:
            assert u == pytest.approx(v)


@pytest.mark.parametrize(
    "container",
    [
        lambda x, labels: x.numpy(),
        lambda x, labels: x.double().numpy(),
        lambda x, labels: TensorDataset(x, labels),  # batches come as (x, label) tuples
        lambda x, labels: DataLoader(TensorDataset(x, labels), batch_size=50),
    ],
    ids=["numpy32", "numpy64", "tensor_dataset", "data_loader"],
)
def test_other_containers_give_the_tensor_numbers_for_the_same_seed(small, container):
    vae, x, labels = small
    reference = pyro_vae.evaluate(vae, x, num_samples=100, seed=3)
    _assert_same(reference, pyro_vae.evaluate(vae, container(x, labels), num_samples=100, seed=3))


def test_a_loader_with_small_batches_matches_a_tensor_in_chunks_of_that_size(small):
    vae, x, labels = small
    # a tensor evaluated 16 points per chunk draws z chunk by chunk, like a loader of 16
    chunked = pyro_vae.evaluate(vae, x, num_samples=100, seed=3, chunk_size=16 * 100)
    loader16 = DataLoader(TensorDataset(x, labels), batch_size=16)
    _assert_same(chunked, pyro_vae.evaluate(vae, loader16, num_samples=100, seed=3))


@pytest.mark.parametrize("batch_size", [7, 50])
def test_containers_agree_within_monte_carlo_error(small, batch_size):
    vae, x, labels = small
    reference = pyro_vae.evaluate(vae, x, num_samples=2000, seed=3)
    loader = DataLoader(TensorDataset(x, labels), batch_size=batch_size)
    result = pyro_vae.evaluate(vae, loader, num_samples=2000, seed=3)
    diff = result["pointwise"]["log_likelihood"] - reference["pointwise"]["log_likelihood"]
    assert result["num_points"] == 50
    # Different chunking draws different samples; an untrained encoder gives heavy-tailed
    # weights, so single points may move by a few tenths while the average barely moves.
    # Points out of order or lost would differ by nats.
    assert diff.abs().max() < 0.3
    assert diff.abs().mean() < 0.05
    assert result["kl_per_dim"] == pytest.approx(reference["kl_per_dim"], rel=1e-5)  # closed form
    assert result["active_units"] == reference["active_units"]
    # another seed gives other draws
    other = pyro_vae.evaluate(vae, x, num_samples=2000, seed=4)
    assert not torch.equal(other["pointwise"]["log_likelihood"], reference["pointwise"]["log_likelihood"])


def test_evaluate_leaves_training_mode_and_global_rng_alone(small):
    vae, x, _ = small
    vae.train()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    pyro_vae.evaluate(vae, x, num_samples=10)
    torch.testing.assert_close(torch.rand(3), expected)
    assert vae.training


@pytest.mark.parametrize(
    "bad",
    [
        torch.randn(10, 4),  # wrong number of features
        torch.randn(10),  # not a batch
        torch.randn(2, 10, 3),  # images not flattened
        torch.tensor([[0.1, float("nan"), 0.3]]),
        torch.tensor([[0.1, float("inf"), 0.3]]),
        np.full((4, 3), np.nan),
    ],
)
def test_evaluate_rejects_bad_data(small, bad):
    vae, _, _ = small
    with pytest.raises(ValueError):
        pyro_vae.evaluate(vae, bad, num_samples=10)


def test_evaluate_rejects_data_outside_the_support():
    torch.manual_seed(0)
    vae = pyro_vae.VAE(4, 2, hidden=(8,), likelihood="bernoulli")
    x = (torch.rand(10, 4) < 0.5).float()
    x[3, 1] = 0.5
    with pytest.raises(ValueError, match="bernoulli"):
        pyro_vae.evaluate(vae, x, num_samples=10)
    beta_vae = pyro_vae.VAE(4, 2, hidden=(8,), likelihood="beta")
    with pytest.raises(ValueError):
        pyro_vae.evaluate(beta_vae, torch.zeros(5, 4), num_samples=10)  # 0 has no Beta density


@pytest.mark.parametrize("num_samples", [0, -3, 2.5, True])
def test_evaluate_rejects_bad_num_samples(small, num_samples):
    vae, x, _ = small
    with pytest.raises(ValueError):
        pyro_vae.evaluate(vae, x, num_samples=num_samples)


def test_evaluate_rejects_bad_chunk_size(small):
    vae, x, _ = small
    with pytest.raises(ValueError):
        pyro_vae.evaluate(vae, x, num_samples=10, chunk_size=0)


def test_evaluate_rejects_empty_data(small):
    vae, _, _ = small
    with pytest.raises(ValueError, match="no data"):
        pyro_vae.evaluate(vae, torch.empty(0, 3), num_samples=10)


# --------------------------------------------------------------------------- memory


def test_many_samples_are_processed_in_bounded_chunks(small):
    vae, x, _ = small
    x = x[:20]
    decoder = vae.decoder
    seen = []
    original_forward = decoder.forward

    def recording_forward(z):
        seen.append(z.shape[:-1].numel())
        return original_forward(z)

    decoder.forward = recording_forward
    try:
        result = pyro_vae.evaluate(vae, x, num_samples=3000, chunk_size=1000)
    finally:
        del decoder.forward
    assert seen and max(seen) <= 1000  # (sample, point) pairs through the decoder at once
    assert sum(seen) == 3000 * 20  # and every pair was used
    assert result["num_samples"] == 3000 and result["num_points"] == 20
    ll = result["pointwise"]["log_likelihood"]
    assert torch.isfinite(ll).all()
    default = pyro_vae.evaluate(vae, x, num_samples=3000)["pointwise"]["log_likelihood"]
    assert (ll - default).abs().max() < 0.05


def test_default_chunk_bounds_the_largest_intermediate():
    from pyro_vae.infer.evaluation import CHUNK_ELEMENTS, default_chunk_size

    mnist = pyro_vae.VAE(784, 40, hidden=(300, 300), likelihood="bernoulli")
    assert default_chunk_size(mnist) * 784 <= CHUNK_ELEMENTS < (default_chunk_size(mnist) + 1) * 784
    # A prior with more components than features: its per-component densities set the chunk.
    big = pyro_vae.VAE(
        784,
        40,
        hidden=(300, 300),
        likelihood="bernoulli",
        prior={"name": "mixture", "options": {"num_components": 2000}},
    )
    assert default_chunk_size(big) * 2000 <= CHUNK_ELEMENTS
    assert default_chunk_size(big) < default_chunk_size(mnist)


# --------------------------------------------------------------------------- non-finite models


def test_evaluate_refuses_a_model_with_nan_weights_before_any_work(small):
    vae, x, _ = small
    broken = copy.deepcopy(vae)
    with torch.no_grad():
        broken.decoder.net[0].weight[0, 0] = float("nan")
        broken.prior._origin.fill_(float("inf"))  # buffers are checked too
    calls = []
    broken.encoder.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(NonFiniteError) as excinfo:
        pyro_vae.evaluate(broken, x, num_samples=10)
    message = str(excinfo.value)
    assert "parameter decoder.net.0.weight: 1 of" in message
    assert "buffer prior._origin: 2 of 2 values" in message
    assert "NaN or infinite weights" in message and "smaller learning rate" in message
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, PyroVAEError)
    assert not calls  # refused before drawing anything
    # The validation ELBO is not refused: training's divergence guard needs the NaN itself.
    assert math.isnan(validation_elbo(broken, x))


def test_evaluate_refuses_non_finite_results_of_an_overflowing_decoder(small):
    vae, x, _ = small
    broken = copy.deepcopy(vae)
    with torch.no_grad():
        last = broken.decoder.net[-1]
        last.weight.zero_()
        last.bias.fill_(3e38)  # finite weights, but the Gaussian's (x - mu)^2 overflows float32
    for t in (*broken.parameters(), *broken.buffers()):
        assert torch.isfinite(t).all()
    with pytest.raises(
        NonFiniteError, match="log_likelihood is not finite for 50 of 50 data points"
    ) as excinfo:
        pyro_vae.evaluate(broken, x, num_samples=10)
    assert "standardize the data" in str(excinfo.value)
    assert not math.isfinite(validation_elbo(broken, x))
    # Only some points overflow: they are counted and the first one is named.
    with torch.no_grad():
        last.bias.zero_()
    far = x.clone()
    far[[7, 12]] = 1e30
    with pytest.raises(NonFiniteError, match="for 2 of 50 data points \\(the first is point 7\\)"):
        pyro_vae.evaluate(broken, far, num_samples=10)
