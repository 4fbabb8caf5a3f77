"""Tests for pyro_vae.distributions.priors: shapes, densities against torch, marginals, learning, the registry."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
import torch.distributions as td
from torch.nn import functional as F

import pyro_vae
from pyro_vae.distributions import priors
from pyro_vae.errors import ConfigError

NAMES = priors.names()
LEARNED = ["learned_normal", "mixture", "vamp", "flow"]
FIXED = ["standard_normal", "normal", "laplace", "student_t"]
FACTORIZED = ["standard_normal", "normal", "learned_normal", "laplace", "student_t"]
INPUT_DIM = 5
LATENT_DIM = 3


def make_vae(prior, latent_dim: int = LATENT_DIM, **options) -> pyro_vae.VAE:
    if options:
        prior = priors.create(prior, **options)
    return pyro_vae.VAE(
        input_dim=INPUT_DIM, latent_dim=latent_dim, hidden=(8,), likelihood="gaussian", prior=prior
    )


def perturb(module: torch.nn.Module, std: float = 0.5) -> None:
    """Move learned parameters off their symmetric initial values."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))


def test_registry_is_populated():
    assert set(FIXED + LEARNED) <= set(NAMES)
    assert NAMES == sorted(NAMES)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NAMES)
def test_prior_shapes(name):
    vae = make_vae(name)
    assert vae.prior.name == name
    p = vae.prior()
    assert p.event_shape == (LATENT_DIM,)
    assert p.batch_shape == ()
    z = p.sample((7,))
    assert z.shape == (7, LATENT_DIM)
    assert torch.isfinite(z).all()
    lp = p.log_prob(z)
    assert lp.shape == (7,)
    assert torch.isfinite(lp).all()
    # Particle dimensions broadcast too.
    assert p.log_prob(torch.randn(2, 7, LATENT_DIM)).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
def test_prior_works_in_the_model(name):
    """The model's plate broadcasts the prior: an ELBO step runs and is finite."""
    vae = make_vae(name)
    elbo = pyro.infer.Trace_ELBO()
    x = torch.randn(4, INPUT_DIM)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    assert loss.shape == ()
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------- log_prob against torch


def _factorized_reference(name: str, prior) -> td.Distribution:
    """The 1-D laws (batch shape (latent_dim,)) of a factorized prior, built by hand."""
    zeros = torch.zeros(LATENT_DIM)
    if name == "standard_normal":
        return td.Normal(zeros, torch.ones(LATENT_DIM))
    if name == "normal":
        return td.Normal(zeros, torch.full((LATENT_DIM,), prior.scale))
    if name == "learned_normal":
        return td.Normal(prior.loc, F.softplus(prior.raw_scale))
    if name == "laplace":
        return td.Laplace(zeros, torch.full((LATENT_DIM,), prior.scale))
    if name == "student_t":
        df = torch.full((LATENT_DIM,), prior.df)
        return td.StudentT(df, zeros, torch.full((LATENT_DIM,), prior.scale))
    raise AssertionError(name)


FACTORIZED_CASES = [
    ("standard_normal", {}),
    ("normal", {"scale": 2.0}),
    ("learned_normal", {}),
    ("learned_normal", {"init_scale": 0.4}),
    ("laplace", {"scale": 0.5}),
    ("laplace", {}),
    ("student_t", {"df": 4.0, "scale": 1.5}),
    ("student_t", {}),
]


@pytest.mark.parametrize(
    "name, options", FACTORIZED_CASES, ids=[f"{n}-{o}" if o else n for n, o in FACTORIZED_CASES]
)
def test_factorized_log_prob_matches_torch(name, options):
    vae = make_vae(name, **options)
    perturb(vae.prior)
    z = 2.0 * torch.randn(4, 7, LATENT_DIM)
    expected = _factorized_reference(name, vae.prior)
    torch.testing.assert_close(vae.prior().log_prob(z), expected.log_prob(z).sum(-1))
    torch.testing.assert_close(vae.prior.marginal_log_prob(z), expected.log_prob(z))


def test_standard_normal_closed_form():
    vae = make_vae("standard_normal")
    z = torch.tensor([[0.0, 1.0, -2.0]])
    expected = -0.5 * (0.0 + 1.0 + 4.0) - 1.5 * math.log(2 * math.pi)
    assert vae.prior().log_prob(z).item() == pytest.approx(expected, rel=1e-6)


def test_learned_normal_initial_values():
    vae = make_vae("learned_normal", init_scale=0.4)
    base = vae.prior().base_dist
    torch.testing.assert_close(base.loc, torch.zeros(LATENT_DIM))
    torch.testing.assert_close(base.scale, torch.full((LATENT_DIM,), 0.4))


def _mixture_reference(log_w, loc, scale, z):
    comp = td.Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (..., K)
    return torch.logsumexp(log_w + comp, dim=-1)


def test_mixture_log_prob_matches_hand_computation():
    vae = make_vae("mixture", num_components=4)
    prior = vae.prior
    perturb(prior)
    assert prior.logits.shape == (4,)
    assert prior.loc.shape == (4, LATENT_DIM)
    assert prior.raw_scale.shape == (4, LATENT_DIM)
    z = 2.0 * torch.randn(5, 7, LATENT_DIM)
    log_w = torch.log_softmax(prior.logits, -1)
    scale = F.softplus(prior.raw_scale) + 1e-4
    expected = _mixture_reference(log_w, prior.loc, scale, z)
    torch.testing.assert_close(prior().log_prob(z), expected)


def test_mixture_initial_components_are_distinct_with_unit_scale():
    prior = make_vae("mixture", num_components=6).prior
    logits, loc, scale = prior.components()
    torch.testing.assert_close(logits, torch.zeros(6))
    torch.testing.assert_close(scale, torch.full((6, LATENT_DIM), 1.0 + 1e-4))
    assert torch.cdist(loc, loc).add(torch.eye(6)).min() > 0


def test_vamp_log_prob_matches_encoder_posteriors():
    vae = make_vae("vamp", num_components=6)
    prior = vae.prior
    assert prior.pseudo_inputs.shape == (6, INPUT_DIM)
    perturb(prior)  # pseudo-inputs
    loc, scale = vae.encoder(prior.pseudo_inputs)
    z = 2.0 * torch.randn(5, 7, LATENT_DIM)
    log_w = torch.full((6,), -math.log(6))  # uniform weights
    expected = _mixture_reference(log_w, loc, scale, z)
    torch.testing.assert_close(prior().log_prob(z), expected)
    # Changing the encoder changes the prior: it is the same network, not a copy.
    before = prior().log_prob(z)
    perturb(vae.encoder)
    assert not torch.allclose(prior().log_prob(z), before)
    loc, scale = vae.encoder(prior.pseudo_inputs)
    torch.testing.assert_close(prior().log_prob(z), _mixture_reference(log_w, loc, scale, z))


# --------------------------------------------------------------------------- marginals


@pytest.mark.parametrize("name", NAMES)
def test_marginal_log_prob_shape(name):
    vae = make_vae(name)
    z = torch.randn(2, 7, LATENT_DIM)
    m = vae.prior.marginal_log_prob(z)
    assert m.shape == (2, 7, LATENT_DIM)
    assert torch.isfinite(m).all()
    assert vae.prior.marginal_log_prob(z[0]).shape == (7, LATENT_DIM)


@pytest.mark.parametrize("name", FACTORIZED)
def test_factorized_marginals_sum_to_log_prob(name):
    vae = make_vae(name)
    perturb(vae.prior)
    z = 2.0 * torch.randn(4, 7, LATENT_DIM)
    torch.testing.assert_close(vae.prior.marginal_log_prob(z).sum(-1), vae.prior().log_prob(z))


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_mixture_marginal_equals_log_prob_in_one_dimension(name):
    vae = make_vae(name, latent_dim=1, num_components=5)
    perturb(vae.prior)
    z = 2.0 * torch.randn(4, 7, 1)
    m = vae.prior.marginal_log_prob(z)
    assert m.shape == (4, 7, 1)
    torch.testing.assert_close(m.squeeze(-1), vae.prior().log_prob(z))


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_mixture_marginals_are_not_the_joint(name):
    """In several dimensions a mixture does not factorize: the marginals do not sum to the joint."""
    vae = make_vae(name, num_components=5)
    perturb(vae.prior, std=1.0)
    z = 2.0 * torch.randn(50, LATENT_DIM)
    assert not torch.allclose(vae.prior.marginal_log_prob(z).sum(-1), vae.prior().log_prob(z), atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_marginals_integrate_to_one(name):
    options = {"num_components": 5} if name in ("mixture", "vamp") else {}
    vae = make_vae(name, **options)
    perturb(vae.prior)
    grid = torch.linspace(-40.0, 40.0, 40001)
    with torch.no_grad():
        density = vae.prior.marginal_log_prob(grid.unsqueeze(-1).expand(-1, LATENT_DIM)).exp()
    integrals = torch.trapezoid(density, grid, dim=0)
    assert integrals.shape == (LATENT_DIM,)
    torch.testing.assert_close(integrals, torch.ones(LATENT_DIM), atol=2e-3, rtol=0)


# --------------------------------------------------------------------------- learned parameters


@pytest.mark.parametrize("name", LEARNED)
def test_learned_prior_parameters_receive_gradients(name):
    vae = make_vae(name)
    # Off the initial point: the flow starts with zero output weights, which block the
    # gradient to the layers below them at that exact point only.
    perturb(vae.prior, std=0.1)
    prior_params = dict(vae.prior.named_parameters())
    assert prior_params, f"{name} should have learned parameters"
    vae_param_ids = {id(p) for p in vae.parameters()}
    for pname, p in prior_params.items():
        assert id(p) in vae_param_ids, f"prior.{pname} is not among vae.parameters()"
    z = 2.0 * torch.randn(16, LATENT_DIM)
    vae.prior().log_prob(z).sum().backward()
    for pname, p in prior_params.items():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_vamp_prior_gradients_reach_the_encoder():
    vae = make_vae("vamp")
    vae.prior().log_prob(torch.randn(16, LATENT_DIM)).sum().backward()
    for pname, p in vae.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", FIXED)
def test_fixed_priors_have_no_parameters(name):
    vae = make_vae(name)
    assert list(vae.prior.parameters()) == []
    assert not any(k.startswith("prior.") for k, _ in vae.named_parameters())
    network_ids = {id(p) for m in (vae.encoder, vae.decoder, vae.likelihood) for p in m.parameters()}
    assert {id(p) for p in vae.parameters()} == network_ids


# --------------------------------------------------------------------------- VampPrior specifics


@pytest.mark.parametrize("n_rows", [100, 7], ids=["more-rows", "fewer-rows"])
def test_vamp_initialize_uses_data_rows(n_rows):
    vae = make_vae("vamp", num_components=20)
    prior = vae.prior
    param = prior.pseudo_inputs
    x = 3.0 * torch.randn(n_rows, INPUT_DIM) + 5.0
    # Before: near 0.5, far from the data.
    assert torch.cdist(prior.pseudo_inputs.detach(), x).min(dim=1).values.min() > 1.0
    prior.initialize(x)
    assert prior.pseudo_inputs is param  # updated in place: optimisers keep tracking it
    assert prior.pseudo_inputs.shape == (20, INPUT_DIM)
    nearest = torch.cdist(prior.pseudo_inputs.detach(), x).min(dim=1).values
    assert nearest.max() < 0.1  # init_noise = 0.01 per coordinate
    if n_rows >= 20:
        # Distinct rows are drawn without replacement.
        idx = torch.cdist(prior.pseudo_inputs.detach(), x).argmin(dim=1)
        assert idx.unique().numel() == 20


def test_vamp_state_dict_holds_encoder_once():
    vae = make_vae("vamp", num_components=4)
    keys = list(vae.state_dict())
    assert not any("_encoder" in k for k in keys), keys
    assert "prior.pseudo_inputs" in keys
    encoder_keys = [k for k in keys if k.startswith("encoder.")]
    assert encoder_keys
    assert [k for k in keys if k.startswith("prior.")] == ["prior.pseudo_inputs"]
    assert len({id(p) for p in vae.parameters()}) == len(list(vae.parameters()))


def test_vamp_state_dict_round_trip():
    vae = make_vae("vamp", num_components=4)
    perturb(vae.prior)
    z = torch.randn(6, LATENT_DIM)
    expected = vae.prior().log_prob(z)
    other = make_vae("vamp", num_components=4)
    assert not torch.allclose(other.prior().log_prob(z), expected)
    other.load_state_dict(vae.state_dict())
    torch.testing.assert_close(other.prior().log_prob(z), expected)
    # The rebuilt prior uses the rebuilt VAE's own encoder.
    assert other.prior._encoder is other.encoder


# --------------------------------------------------------------------------- registry and options


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("mixture", {"num_components": 0}, "num_components must be a positive integer"),
        ("mixture", {"num_components": 2.5}, "num_components must be a positive integer"),
        ("vamp", {"num_components": 0}, "num_components must be a positive integer"),
        ("mixture", {"init_spread": 0.0}, "init_spread must be positive"),
        ("normal", {"scale": 0.0}, "scale must be positive"),
        ("normal", {"scale": -1.0}, "scale must be positive"),
        ("laplace", {"scale": 0.0}, "scale must be positive"),
        ("student_t", {"df": 0.0}, "df must be positive"),
        ("student_t", {"scale": 0.0}, "scale must be positive"),
        ("learned_normal", {"init_scale": 0.0}, "init_scale must be positive"),
    ],
)
def test_bad_options(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        priors.create(name, **options)
    with pytest.raises(ValueError, match=pattern):
        pyro_vae.VAE(
            input_dim=INPUT_DIM,
            latent_dim=LATENT_DIM,
            hidden=(8,),
            likelihood="gaussian",
            prior={"name": name, "options": options},
        )


def test_unknown_prior_name():
    with pytest.raises(ValueError) as excinfo:
        make_vae("standard_norml")
    message = str(excinfo.value)
    assert "unknown prior 'standard_norml'" in message
    assert "Did you mean 'standard_normal'?" in message
    for name in NAMES:
        assert name in message


def test_unknown_prior_option():
    with pytest.raises(ValueError) as excinfo:
        priors.create("mixture", components=3)
    message = str(excinfo.value)
    assert "components" in message
    assert "num_components" in message.split("takes:")[1]
    with pytest.raises(ValueError, match="takes: none"):
        priors.create("standard_normal", scale=2.0)


@pytest.mark.parametrize("name", NAMES)
def test_prior_spec_round_trips(name):
    vae = make_vae(name)
    spec = json.loads(json.dumps(vae.prior.spec()))
    assert spec["name"] == name
    assert vae.config()["prior"] == spec
    again = make_vae(spec)
    assert again.prior.spec() == spec
    assert type(again.prior) is type(vae.prior)


def test_prior_instance_is_used_as_given():
    prior = priors.ScaledNormal(scale=3.0)
    vae = make_vae(prior)
    assert vae.prior is prior
    assert vae.prior.spec() == {"name": "normal", "options": {"scale": 3.0}}
    torch.testing.assert_close(vae.prior().base_dist.scale, torch.full((LATENT_DIM,), 3.0))


@pytest.mark.parametrize("scale", [1.0, 1e-2, 1e-3])
def test_fast_mixture_density_matches_mixture_same_family_for_narrow_components(scale):
    from pyro_vae.distributions.priors import DiagonalGaussianMixture

    g = torch.Generator().manual_seed(0)
    k, latent = 50, 8
    logits, loc = torch.randn(k, generator=g), 3 * torch.randn(k, latent, generator=g)
    sd = scale * (0.5 + torch.rand(k, latent, generator=g))
    # points near components, where the expansion of the squares cancels most
    z = loc[torch.randint(k, (64,), generator=g)] + scale * torch.randn(64, latent, generator=g)
    fast = DiagonalGaussianMixture(logits, loc, sd).log_prob(z)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits.double()),
        torch.distributions.Independent(torch.distributions.Normal(loc.double(), sd.double()), 1),
    ).log_prob(z.double())
    torch.testing.assert_close(fast.double(), reference, rtol=1e-5, atol=1e-4)
    assert DiagonalGaussianMixture(logits, loc, sd).sample((3, 2)).shape == (3, 2, latent)


# --------------------------------------------------------------------------- flow prior


def _inverse_and_log_det(prior, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f^{-1}(z) layer by layer, and log|det d f^{-1} / dz| from autograd's full Jacobian."""

    def inverse(v):
        for t in reversed(prior.transforms()):
            v = t.inv(v)
        return v

    u = inverse(z)
    log_dets = []
    for row in z:
        jac = torch.autograd.functional.jacobian(inverse, row)
        log_dets.append(torch.linalg.slogdet(jac).logabsdet)
    return u, torch.stack(log_dets)


@pytest.mark.parametrize("latent_dim", [1, 3])
def test_flow_log_prob_is_the_change_of_variables(latent_dim):
    vae = make_vae("flow", latent_dim=latent_dim, num_layers=3, hidden=16, bound=4.0)
    perturb(vae.prior, std=0.3)  # away from the initial (near-identity) map
    z = 1.5 * torch.randn(12, latent_dim)
    with torch.no_grad():
        got = vae.prior().log_prob(z)
    u, log_det = _inverse_and_log_det(vae.prior, z)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1) + log_det
    torch.testing.assert_close(got, expected.detach(), atol=1e-4, rtol=1e-4)
    # The flow is not a standard normal any more (else the test above proves little).
    assert not torch.allclose(got, torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-2)


def test_flow_density_integrates_to_one_in_two_dimensions():
    """The integral of p(z), by importance sampling from a wide Gaussian: E_q[p/q] = 1."""
    vae = make_vae("flow", latent_dim=2, num_layers=2, hidden=16, bound=3.0)
    perturb(vae.prior, std=0.1)  # larger kicks make spiky densities
    q = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.full((2,), 1.5)), 1)
    z = q.sample((400_000,))
    with torch.no_grad():
        log_p = vae.prior().log_prob(z)
    ratio = (log_p - q.log_prob(z)).double().exp()
    se = ratio.std() / math.sqrt(ratio.numel())
    assert se < 3e-3  # precise enough to see a density off by 1%
    assert abs(ratio.mean().item() - 1.0) < 4 * se
    # ... and it is not the base density, which would integrate to one trivially.
    base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert (log_p - base).abs().max() > 0.1


def test_flow_marginals_match_the_flows_samples():
    """The kernel estimate of each marginal is within 0.1 in L1 distance of a fine histogram."""
    vae = make_vae("flow", latent_dim=2, num_layers=2, hidden=16, bound=3.0)
    perturb(vae.prior, std=0.1)
    with torch.no_grad():
        draws = vae.prior().sample((1_000_000,))
        edges = torch.linspace(-4.0, 4.0, 161)
        width = edges[1] - edges[0]
        centres = 0.5 * (edges[1:] + edges[:-1])
        density = vae.prior.marginal_log_prob(centres.unsqueeze(-1).expand(-1, 2)).exp()
    for j in range(2):
        hist = torch.histogram(draws[:, j], bins=edges).hist / (draws.shape[0] * width)
        assert ((hist - density[:, j]).abs().sum() * width).item() < 0.1, j
        # Not the base marginal: the flow moved it.
        base = torch.distributions.Normal(0.0, 1.0).log_prob(centres).exp()
        assert ((hist - base).abs().sum() * width).item() > 0.15, j
    # The estimate is a fixed function: the same answer twice, and the global random stream untouched.
    state = torch.get_rng_state()
    again = vae.prior.marginal_log_prob(centres.unsqueeze(-1).expand(-1, 2))
    assert torch.equal(state, torch.get_rng_state())
    torch.testing.assert_close(again.exp(), density)


def test_flow_prior_trains_saves_and_loads(tmp_path):
    x = torch.randn(64, INPUT_DIM)
    vae = make_vae("flow", num_layers=1, hidden=8)
    before = {k: v.clone() for k, v in vae.prior.state_dict().items()}
    pyro_vae.fit(vae, x, epochs=2, batch_size=16, progress=False)
    after = vae.prior.state_dict()
    assert before.keys() == after.keys() and before
    assert any(not torch.equal(before[k], after[k]) for k in before)
    vae.save(tmp_path / "m")
    again = pyro_vae.VAE.load(tmp_path / "m")
    z = torch.randn(5, LATENT_DIM)
    torch.testing.assert_close(again.prior().log_prob(z), vae.prior().log_prob(z))


def test_flow_marginal_table_matches_the_direct_kernel_estimate_and_follows_the_parameters():
    vae = make_vae("flow", latent_dim=3, num_layers=2, hidden=16)
    perturb(vae.prior, std=0.1)
    prior = vae.prior
    z = torch.cat([2.0 * torch.randn(500, 3), torch.tensor([[40.0, -40.0, 0.0]])])  # one row far outside
    draws = prior._marginal_draws()
    bandwidth = 0.53 * draws.std(0) * draws.shape[0] ** (-0.2)
    direct = prior._kde(z, draws, bandwidth)
    # Interpolated on a grid of a tenth of a bandwidth: a few hundredths of a nat at most, far in the tails.
    torch.testing.assert_close(prior.marginal_log_prob(z), direct, atol=0.03, rtol=0)
    assert (prior.marginal_log_prob(z) - direct).abs().median() < 1e-3  # and far less in the bulk
    # A parameter update invalidates the cached table.
    before = prior.marginal_log_prob(z)
    perturb(prior, std=0.1)
    after = prior.marginal_log_prob(z)
    assert not torch.allclose(before, after, atol=0.1)
    draws = prior._marginal_draws()
    bandwidth = 0.53 * draws.std(0) * draws.shape[0] ** (-0.2)
    torch.testing.assert_close(after, prior._kde(z, draws, bandwidth), atol=0.03, rtol=0)


@pytest.mark.parametrize(
    "spec, pattern",
    [
        (42, "got 42"),
        (None, "got None"),
        (2.0, "got 2.0"),
        (priors.ScaledNormal, "the class ScaledNormal, not an instance.*'normal'"),
        (pyro_vae.distributions.likelihoods.Gaussian(), "pyro_vae.distributions.likelihoods.Gaussian"),
        ({"name": "normal", "options": [("scale", 2.0)]}, "'options' of prior 'normal' must be a dict"),
        ({"name": ["normal"]}, "must be a string"),
    ],
)
def test_create_rejects_what_is_not_a_name_spec_or_instance(spec, pattern):
    with pytest.raises(ConfigError, match=pattern) as excinfo:
        priors.create(spec)
    assert isinstance(excinfo.value, ValueError)
    if not isinstance(spec, (dict, type)):
        message = str(excinfo.value)
        assert f"a registered name ({', '.join(NAMES)})" in message
        assert "a dict {'name': ..., 'options': {...}} or a Prior instance" in message
    with pytest.raises(ConfigError, match=pattern):
        make_vae(spec)


def test_an_unregistered_class_passed_as_a_class_says_how_to_use_it():
    class Mine(priors.Prior):
        def forward(self):
            return torch.distributions.Normal(self._origin, 1.0).to_event(1)

    assert Mine().name == "Mine"
    with pytest.raises(ConfigError, match="pass Mine\\(...\\) or register it with register\\(name\\)"):
        priors.create(Mine)
