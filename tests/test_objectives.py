"""Objectives: Pyro's ELBOs on the VAE's model/guide checked against hand-computed maths.

Every check recomputes the objective with plain torch from the encoder's outputs, the
prior and ``vae.decode(z).log_prob(x)`` at the *same* draws of ``z`` (same seed), so a
wrong sign, a missing term or a misplaced ``beta`` changes the numbers.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import kl_divergence

import pyro_vae
from pyro_vae.errors import ConfigError
from pyro_vae.infer import objectives
from pyro_vae.infer.objectives import BetaSchedule, RenyiELBO, make_elbo

N, D, L = 7, 5, 2


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def make_vae(seed: int = 0) -> tuple[pyro_vae.VAE, torch.Tensor]:
    torch.manual_seed(seed)
    vae = pyro_vae.VAE(D, L, hidden=(8,), likelihood="gaussian")
    x = torch.randn(N, D)
    return vae, x


def guide_z(vae, x, seed: int, num_particles: int | None = None) -> torch.Tensor:
    """The draw of ``z`` that the guide makes after ``pyro.set_rng_seed(seed)``.

    With ``num_particles`` the guide runs inside the same outer plate (dim -2) that Pyro's
    vectorised ELBOs use, so the draws are those of ``make_elbo(loss, num_particles)``.
    """
    pyro.set_rng_seed(seed)
    if num_particles is None:
        return poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    with pyro.plate("num_particles_vectorized", num_particles, dim=-2):
        return poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]


def hand_terms(vae, x, z):
    """Per-point ``log p(x|z)``, ``log p(z)``, ``log q(z|x)`` for the standard normal prior."""
    loc, scale = vae.encoder(x)
    log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
    log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_px_z = vae.decode(z).log_prob(x)
    return log_px_z, log_pz, log_q


def closed_form_kl(loc, scale):
    """KL(N(mu, s^2) || N(0, 1)) summed over the last dimension."""
    return 0.5 * (loc**2 + scale**2 - 1.0 - 2.0 * scale.log()).sum(-1)


def grads(loss, params):
    return torch.autograd.grad(loss, params)


# --------------------------------------------------------------------------- Trace_ELBO


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_trace_elbo_equals_hand_computed_reconstruction_plus_kl(seed):
    vae, x = make_vae()
    z = guide_z(vae, x, seed)
    assert z.shape == (N, L)
    assert torch.equal(z, guide_z(vae, x, seed)), "same seed must give the same z"
    assert not torch.equal(z, guide_z(vae, x, seed + 1))

    pyro.set_rng_seed(seed)
    loss = make_elbo("elbo").differentiable_loss(vae.model, vae.guide, x)

    log_px_z, log_pz, log_q = hand_terms(vae, x, z)
    expected = -(log_px_z + log_pz - log_q).sum()
    assert loss.shape == ()
    assert loss.requires_grad
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    # and it is not trivially matched by an expression missing a term
    assert not torch.isclose(loss, -log_px_z.sum(), rtol=1e-3)


# --------------------------------------------------------------------------- analytic vs Monte Carlo KL


def test_closed_form_gaussian_kl_against_torch_and_monte_carlo():
    torch.manual_seed(0)
    loc = torch.randn(4, 3, dtype=torch.float64)
    scale = torch.rand(4, 3, dtype=torch.float64) * 1.5 + 0.2
    closed = closed_form_kl(loc, scale)
    q = dist.Normal(loc, scale)
    p = dist.Normal(torch.zeros_like(loc), torch.ones_like(scale))
    torch.testing.assert_close(kl_divergence(q, p).sum(-1), closed)
    torch.testing.assert_close(kl_divergence(q.to_event(1), p.to_event(1)), closed)

    num = 200_000
    z = q.sample((num,))
    per_sample = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (num, 4)
    mc = per_sample.mean(0)
    se = per_sample.std(0) / math.sqrt(num)
    assert (se < 0.02).all()
    assert ((mc - closed).abs() <= 4 * se).all(), (mc, closed, se)


def test_analytic_kl_elbo_agrees_with_many_particle_monte_carlo_elbo():
    vae, x = make_vae()
    k = 4000
    loc, scale = vae.encoder(x)
    kl = closed_form_kl(loc, scale)  # (N,)

    # Hand-computed per-particle values from the draws the vectorised ELBOs make.
    z = guide_z(vae, x, seed=5, num_particles=k)
    assert z.shape == (k, N, L)
    log_px_z, log_pz, log_q = hand_terms(vae, x, z)  # each (k, N)
    mc_particles = (log_px_z + log_pz - log_q).sum(-1).detach()  # Trace_ELBO, per particle
    analytic_particles = (log_px_z - kl).sum(-1).detach()  # TraceMeanField_ELBO, per particle

    pyro.set_rng_seed(5)
    loss_mc = make_elbo("elbo", k).differentiable_loss(vae.model, vae.guide, x).detach()
    pyro.set_rng_seed(5)
    loss_analytic = make_elbo("elbo_analytic", k).differentiable_loss(vae.model, vae.guide, x).detach()
    torch.testing.assert_close(loss_mc, -mc_particles.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(loss_analytic, -analytic_particles.mean(), rtol=1e-5, atol=1e-4)

    # Same draws: the difference is the Monte Carlo error of the KL alone (paired test).
    diff = mc_particles - analytic_particles
    se_paired = diff.std() / math.sqrt(k)
    assert abs(loss_mc - loss_analytic) <= 4 * se_paired, (loss_mc, loss_analytic, se_paired)

    # Independent draws (another seed for the Monte Carlo ELBO): within 4 combined SEs.
    pyro.set_rng_seed(6)
    loss_mc_other = make_elbo("elbo", k).differentiable_loss(vae.model, vae.guide, x).detach()
    se = math.sqrt(mc_particles.var() / k + analytic_particles.var() / k)
    assert abs(loss_mc_other - loss_analytic) <= 4 * se

    # Single particle analytic ELBO: reconstruction at one draw minus the closed-form KL.
    z1 = guide_z(vae, x, seed=9)
    pyro.set_rng_seed(9)
    loss1 = make_elbo("elbo_analytic").differentiable_loss(vae.model, vae.guide, x)
    expected1 = -(vae.decode(z1).log_prob(x) - kl).sum()
    torch.testing.assert_close(loss1, expected1, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- beta


def hand_beta_objective(vae, x, beta, seed):
    """-(log p(x|z) + beta (log p(z) - log q(z|x))), summed, differentiable in all parameters."""
    z = guide_z(vae, x, seed)  # an rsample: differentiable in the encoder's parameters
    log_px_z, log_pz, log_q = hand_terms(vae, x, z)
    return -(log_px_z + beta * (log_pz - log_q)).sum()


def pyro_beta_loss(vae, x, beta, seed):
    pyro.set_rng_seed(seed)
    return make_elbo("elbo").differentiable_loss(vae.model, vae.guide, x, beta)


@pytest.mark.parametrize("beta", [0.0, 0.25, 3.0])
def test_beta_scales_only_the_kl_term(beta):
    vae, x = make_vae()
    params = list(vae.parameters())
    seed = 3
    hand = hand_beta_objective(vae, x, beta, seed)
    loss = pyro_beta_loss(vae, x, beta, seed)
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-5)
    for g_pyro, g_hand in zip(grads(loss, params), grads(hand, params)):
        torch.testing.assert_close(g_pyro, g_hand, rtol=1e-4, atol=1e-5)


def test_beta_changes_encoder_but_not_decoder_gradients():
    vae, x = make_vae()
    seed = 3
    decoder_params = list(vae.decoder.parameters())
    encoder_params = list(vae.encoder.parameters())
    dec, enc = {}, {}
    for beta in (0.25, 1.0, 3.0):
        loss = pyro_beta_loss(vae, x, beta, seed)
        g = grads(loss, decoder_params + encoder_params)
        dec[beta], enc[beta] = g[: len(decoder_params)], g[len(decoder_params) :]
        assert all(t.abs().sum() > 0 for t in dec[beta])
    for beta in (0.25, 3.0):
        for a, b in zip(dec[beta], dec[1.0]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        differs = [not torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(enc[beta], enc[1.0])]
        assert any(differs), "the KL weight must change the encoder's gradients"
    # beta = 1 is the plain ELBO
    pyro.set_rng_seed(seed)
    plain = make_elbo("elbo").differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(pyro_beta_loss(vae, x, 1.0, seed), plain)


def test_beta_warmup_start_is_usable_in_the_loss():
    """A linear warm-up starts at beta = start = 0 by default: the loss must accept it."""
    vae, x = make_vae()
    schedule = BetaSchedule(end=1.0, warmup_epochs=10)
    beta0 = schedule(0)
    assert beta0 == 0.0
    loss = pyro_beta_loss(vae, x, beta0, seed=0)
    z = guide_z(vae, x, seed=0)
    torch.testing.assert_close(loss, -vae.decode(z).log_prob(x).sum(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- IWAE


def hand_iwae_loss(vae, x, seed, k):
    z = guide_z(vae, x, seed, num_particles=k)
    log_px_z, log_pz, log_q = hand_terms(vae, x, z)
    log_w = log_px_z + log_pz - log_q  # (k, N)
    return -(torch.logsumexp(log_w, 0) - math.log(k)).sum(), log_w


@pytest.mark.parametrize("k", [2, 16])
def test_iwae_matches_pyro_renyi_and_hand_computation(k):
    vae, x = make_vae()
    seed = 11
    iwae = make_elbo("iwae", k)
    assert isinstance(iwae, RenyiELBO)
    assert iwae.alpha == 0.0 and iwae.num_particles == k

    pyro.set_rng_seed(seed)
    loss = iwae.differentiable_loss(vae.model, vae.guide, x)
    reference = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    loss_pyro = reference.loss(vae.model, vae.guide, x)
    hand, log_w = hand_iwae_loss(vae, x, seed, k)

    assert loss.requires_grad
    assert loss.item() == pytest.approx(loss_pyro, rel=1e-5, abs=1e-4)
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-5)
    # With the same draws the IWAE bound is at least the average of the log weights (Jensen).
    pyro.set_rng_seed(seed)
    loss_elbo = make_elbo("elbo", k).differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(loss_elbo, -log_w.mean(0).sum(), rtol=1e-5, atol=1e-5)
    assert loss.item() <= loss_elbo.item() + 1e-5


def test_iwae_bound_is_above_the_elbo_on_average():
    vae, x = make_vae()
    iwae_losses, elbo_losses = [], []
    for seed in range(20):
        pyro.set_rng_seed(seed)
        iwae_losses.append(make_elbo("iwae", 8).differentiable_loss(vae.model, vae.guide, x).item())
        pyro.set_rng_seed(1000 + seed)  # independent draws
        elbo_losses.append(make_elbo("elbo").differentiable_loss(vae.model, vae.guide, x).item())
    iwae_mean = sum(iwae_losses) / len(iwae_losses)
    elbo_mean = sum(elbo_losses) / len(elbo_losses)
    assert iwae_mean < elbo_mean


@pytest.mark.parametrize("k", [2, 8])
def test_iwae_gradient_matches_pyro_loss_and_grads(k):
    vae, x = make_vae()
    seed = 21
    params = list(vae.parameters())

    pyro.set_rng_seed(seed)
    ours = grads(make_elbo("iwae", k).differentiable_loss(vae.model, vae.guide, x), params)

    def model(x):
        pyro.module("vae", vae)
        vae.model(x)

    def guide(x):
        pyro.module("vae", vae)
        vae.guide(x)

    pyro.clear_param_store()
    vae.zero_grad(set_to_none=True)
    reference = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    loss_pyro = reference.loss_and_grads(model, guide, x)
    pyro.set_rng_seed(seed)
    loss_ours = make_elbo("iwae", k).differentiable_loss(vae.model, vae.guide, x)
    assert loss_ours.item() == pytest.approx(loss_pyro, rel=1e-5, abs=1e-4)

    names = [n for n, _ in vae.named_parameters()]
    assert {f"vae$$${n}" for n in names} <= set(pyro.get_param_store().keys())
    for name, p, g in zip(names, params, ours):
        assert p.grad is not None, name
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        assert g.abs().sum() > 0, name


# --------------------------------------------------------------------------- make_elbo


def test_make_elbo_returns_the_named_pyro_classes():
    assert type(make_elbo("elbo")) is pyro.infer.Trace_ELBO
    assert type(make_elbo("elbo_analytic", 3)) is pyro.infer.TraceMeanField_ELBO
    elbo = make_elbo("elbo", 4)
    assert elbo.num_particles == 4 and elbo.vectorize_particles
    assert not make_elbo("elbo", 1).vectorize_particles


@pytest.mark.parametrize(
    "loss, num_particles",
    [
        ("nonsense", 1),
        ("ELBO", 1),
        ("elbo", 0),
        ("elbo", -2),
        ("elbo", 1.5),
        ("elbo", True),
        ("iwae", 1),
        ("iwae", 0),
    ],
)
def test_make_elbo_rejects_bad_arguments(loss, num_particles):
    with pytest.raises(ValueError):
        make_elbo(loss, num_particles)


# --------------------------------------------------------------------------- BetaSchedule


def test_beta_schedule_constant():
    s = BetaSchedule(end=0.5)
    assert [s(t) for t in (0, 0.5, 3, 1000)] == [0.5] * 4
    assert BetaSchedule()(0) == 1.0


def test_beta_schedule_linear_warmup():
    s = BetaSchedule(end=2.0, warmup_epochs=4, start=0.5)
    assert s(0) == pytest.approx(0.5)
    assert s(2) == pytest.approx(1.25)  # half-way
    assert s(1) == pytest.approx(0.875)
    assert s(4) == pytest.approx(2.0)
    assert s(10) == pytest.approx(2.0)
    assert s(-1) == pytest.approx(0.5)  # clamped before the start
    default = BetaSchedule(warmup_epochs=10)
    assert (default(0), default(5), default(10), default(20)) == pytest.approx((0.0, 0.5, 1.0, 1.0))


def test_beta_schedule_create():
    assert BetaSchedule.create(0.3) == BetaSchedule(end=0.3)
    assert BetaSchedule.create(2) == BetaSchedule(end=2.0)
    spec = {"end": 1.0, "warmup_epochs": 5, "start": 0.1}
    s = BetaSchedule.create(spec)
    assert s == BetaSchedule(end=1.0, warmup_epochs=5, start=0.1)
    assert BetaSchedule.create(s) is s
    assert BetaSchedule.create(s.to_dict()) == s


@pytest.mark.parametrize(
    "spec",
    [
        -0.1,
        float("nan"),
        float("inf"),
        {"end": -1.0},
        {"warmup_epochs": -3},
        {"start": -0.5},
        {"end": 1.0, "warmup": 5},
        {"beta": 1.0},
        "1.0",
        True,
        None,
    ],
)
def test_beta_schedule_rejects_bad_values(spec):
    with pytest.raises(ValueError):
        BetaSchedule.create(spec)


# --------------------------------------------------------------------------- the registry


def test_objectives_are_registered_classes_that_build_their_pyro_elbo():
    assert objectives.names() == ["elbo", "elbo_analytic", "iwae"]
    assert isinstance(objectives.create("elbo"), objectives.TraceELBO)
    assert type(objectives.create({"name": "elbo_analytic"}).elbo(2)) is pyro.infer.TraceMeanField_ELBO
    iwae = objectives.create("iwae").elbo(3)
    assert type(iwae) is RenyiELBO and iwae.alpha == 0 and iwae.num_particles == 3
    instance = objectives.IWAE()
    assert objectives.create(instance) is instance
    assert type(make_elbo(instance, 2)) is RenyiELBO
    assert instance.spec() == {"name": "iwae", "options": {}}
    with pytest.raises(ConfigError, match="num_particles >= 2"):
        objectives.create("iwae").elbo(1)


def test_a_newly_registered_objective_is_usable_by_make_elbo_by_name():
    @objectives.register("test_renyi")
    class Renyi(objectives.Objective):
        r"""The Rényi bound with a chosen :math:`\alpha` (an option, kept under its own name)."""

        def __init__(self, alpha: float = 0.5) -> None:
            self.alpha = alpha

        def elbo(self, num_particles=1):
            return RenyiELBO(alpha=self.alpha, **objectives.particles(num_particles))

    try:
        assert "test_renyi" in objectives.names()
        elbo = make_elbo("test_renyi", 4)
        assert type(elbo) is RenyiELBO and elbo.alpha == 0.5 and elbo.vectorize_particles
        assert make_elbo({"name": "test_renyi", "options": {"alpha": 0.25}}, 2).alpha == 0.25
        assert objectives.create("test_renyi", alpha=0.1).spec() == {
            "name": "test_renyi",
            "options": {"alpha": 0.1},
        }
        # It trains like the built-in ones: a finite loss with gradients.
        vae, x = make_vae()
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        assert torch.isfinite(loss) and loss.requires_grad
        with pytest.raises(ConfigError, match="already registered"):
            objectives.register("test_renyi")(Renyi)
    finally:
        objectives.REGISTRY.unregister("test_renyi")
    assert "test_renyi" not in objectives.names()
    with pytest.raises(ConfigError, match="unknown objective 'test_renyi'"):
        make_elbo("test_renyi", 2)


@pytest.mark.parametrize(
    "spec, pattern",
    [
        (42, "got 42"),
        (None, "got None"),
        (1.5, "got 1.5"),
        (objectives.TraceELBO, "the class TraceELBO, not an instance.*'elbo'"),
        (pyro.infer.Trace_ELBO(), "pyro.infer.trace_elbo.Trace_ELBO"),
        ({"name": "elbo", "options": ["x"]}, "'options' of objective 'elbo' must be a dict"),
        ({"name": "elbo", "options": 3}, "must be a dict"),
        ({"options": {}}, "needs the keys 'name'"),
        ({"name": 1}, "must be a string"),
        ("Elbo", "unknown objective 'Elbo'.*Did you mean 'elbo'"),
    ],
)
def test_objectives_create_rejects_what_is_not_a_name_spec_or_instance(spec, pattern):
    with pytest.raises(ConfigError, match=pattern) as excinfo:
        objectives.create(spec)
    assert isinstance(excinfo.value, ValueError)
    if not isinstance(spec, (dict, str)) and not isinstance(spec, type):
        assert "a registered name (elbo, elbo_analytic, iwae)" in str(excinfo.value)
        assert "Objective instance" in str(excinfo.value)
