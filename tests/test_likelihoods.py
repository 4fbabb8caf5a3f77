"""Tests for pyro_vae.distributions.likelihoods: shapes, densities against torch, supports, the registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributions as td
from torch.nn import functional as F

import pyro_vae
from pyro_vae.distributions import likelihoods
from pyro_vae.distributions.likelihoods import choose_likelihood
from pyro_vae.errors import ConfigError, DataError

# The families; "categorical" (num_categories) and "columns" (a likelihood per column) need
# options that depend on the data and are tested in tests/test_tables.py.
TABLE_LIKELIHOODS = ("categorical", "columns")
NAMES = [n for n in likelihoods.names() if n not in TABLE_LIKELIHOODS]
INPUT_DIM = 5


def valid_data(support_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Random data lying in the support called ``support_name``."""
    if support_name == "real":
        return 3.0 * torch.randn(shape)
    if support_name == "binary":
        return torch.bernoulli(torch.full(shape, 0.5))
    if support_name == "unit_interval":
        x = torch.rand(shape)
        flat = x.view(-1)
        flat[0], flat[-1] = 0.0, 1.0  # the closed interval includes its endpoints
        return x
    if support_name == "open_unit_interval":
        return torch.rand(shape).clamp(1e-3, 1 - 1e-3)
    if support_name == "nonnegative_integer":
        return torch.poisson(torch.full(shape, 3.0))
    if support_name == "integer":
        return torch.round(10.0 * torch.randn(shape))
    raise AssertionError(f"no data generator for support {support_name!r}")


# Values that each support excludes (finite ones; non-finite values are tested separately).
INVALID_DATA = {
    "integer": [0.5, -2.25],
    "binary": [0.5, -1.0, 2.0],
    "unit_interval": [-0.1, 1.5],
    "open_unit_interval": [0.0, 1.0, -0.5, 1.5],
    "nonnegative_integer": [-1.0, 2.5],
}


def make(name: str, input_dim: int = INPUT_DIM, **options) -> likelihoods.Likelihood:
    lik = likelihoods.create(name, **options)
    lik.setup(input_dim)
    return lik


def test_registry_is_populated():
    expected = {
        "gaussian",
        "gaussian_shared",
        "gaussian_fixed",
        "bernoulli",
        "continuous_bernoulli",
        "beta",
        "laplace",
        "student_t",
        "poisson",
        "negative_binomial",
    }
    assert expected <= set(NAMES)
    assert NAMES == sorted(NAMES)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("prefix", [(4,), (3, 4)], ids=["batch", "particles-batch"])
def test_shapes_and_finite_log_prob(name, prefix):
    lik = make(name)
    params = torch.randn(*prefix, lik.num_params, INPUT_DIM)
    d = lik(params)
    assert d.batch_shape == (*prefix, INPUT_DIM)
    assert d.event_shape == ()

    x = valid_data(lik.support.name, (*prefix, INPUT_DIM))
    assert lik.support.contains(x)
    lik.check_data(x)  # must not raise
    lp = d.log_prob(x)
    assert lp.shape == (*prefix, INPUT_DIM)
    assert torch.isfinite(lp).all()
    if lik.discrete:
        assert (lp <= 0).all(), "a log probability cannot be positive"

    mean = lik.mean(d)
    assert mean.shape == (*prefix, INPUT_DIM)
    assert torch.isfinite(mean).all()

    # The model adds .to_event(1): one event per data point.
    lp_event = d.to_event(1).log_prob(x)
    assert lp_event.shape == prefix
    torch.testing.assert_close(lp_event, lp.sum(-1))


# --------------------------------------------------------------------------- log_prob against torch


def _expected(name: str, lik, params: torch.Tensor) -> td.Distribution:
    """The torch distribution built by hand from the raw decoder outputs."""
    if name == "gaussian":
        loc, raw = params.unbind(-2)
        return td.Normal(loc, F.softplus(raw) + lik.min_scale)
    if name == "gaussian_shared":
        loc = params[..., 0, :]
        scale = F.softplus(lik.raw_scale) + lik.min_scale
        return td.Normal(loc, scale.expand_as(loc))
    if name == "gaussian_fixed":
        loc = params[..., 0, :]
        return td.Normal(loc, torch.full_like(loc, lik.scale))
    if name == "gaussian_optimal":  # outside training: the running noise level
        loc = params[..., 0, :]
        return td.Normal(loc, lik.running_variance.sqrt().expand_as(loc))
    if name == "bernoulli":
        # validate_args=False: with strict=False the data are grey levels.
        return td.Bernoulli(logits=params[..., 0, :], validate_args=False)
    if name == "continuous_bernoulli":
        return td.ContinuousBernoulli(logits=params[..., 0, :])
    if name == "beta":
        a, b = params.unbind(-2)
        m = lik.min_concentration
        return td.Beta(F.softplus(a) + m, F.softplus(b) + m)
    if name == "laplace":
        loc, raw = params.unbind(-2)
        return td.Laplace(loc, F.softplus(raw) + lik.min_scale)
    if name == "student_t":
        loc, raw = params.unbind(-2)
        if lik.df is None:
            df = F.softplus(lik.raw_df) + 1.0
        else:
            df = torch.tensor(float(lik.df))
        return td.StudentT(df.expand_as(loc), loc, F.softplus(raw) + lik.min_scale)
    if name == "poisson":
        return td.Poisson(F.softplus(params[..., 0, :]) + lik.min_rate)
    if name == "negative_binomial":
        raw_count, logits = params.unbind(-2)
        return td.NegativeBinomial(F.softplus(raw_count) + lik.min_total_count, logits=logits)
    if name == "discretized_gaussian":
        loc, raw = params.unbind(-2)
        return _RoundedNormal(lik.center + lik.spread * loc, lik.spread * (F.softplus(raw) + lik.min_scale))
    if name == "gaussian_lowrank":
        loc, raw, *rows = params.double().unbind(-2)  # dense float64: the float32 Cholesky is the less exact
        factor = torch.stack(rows, -1)
        cov = factor @ factor.mT + torch.diag_embed((F.softplus(raw) + lik.min_scale) ** 2)
        return _CellShares(td.MultivariateNormal(loc, cov))
    if name == "point_masses":  # real test data (3 * randn) never hit its atom at 0: the density's part
        *logits, loc, raw = params.unbind(-2)
        log_w = torch.stack(logits, -1).log_softmax(-1)[..., -1]
        normal = td.Normal(lik.center + lik.spread * loc, lik.spread * (F.softplus(raw) + lik.min_scale))
        return _Shifted(normal, log_w, log_w.exp() * normal.mean)  # the atom at 0 adds 0 to the mean
    raise AssertionError(f"no hand-built reference for likelihood {name!r}")


class _Shifted:
    """A density plus a constant log weight."""

    def __init__(self, density, log_weight, mean):
        self.density, self.log_weight, self.mean = density, log_weight, mean

    def log_prob(self, x):
        return self.density.log_prob(x) + self.log_weight


class _CellShares:
    """A dense multivariate normal's log density per point, shared equally among its D cells."""

    def __init__(self, mvn):
        self.mean, self.mvn = mvn.mean.float(), mvn

    def log_prob(self, x):
        shares = (self.mvn.log_prob(x.double()) / x.shape[-1]).float()
        return shares.unsqueeze(-1).expand(self.mvn.batch_shape + x.shape[-1:])


class _RoundedNormal:
    """P(x) = Phi((x + 1/2 - mu) / sigma) - Phi((x - 1/2 - mu) / sigma), in float64 by torch's Normal."""

    def __init__(self, loc, scale):
        self.mean, self.normal = loc, td.Normal(loc.double(), scale.double())

    def log_prob(self, x):
        x = x.double()
        return torch.log(self.normal.cdf(x + 0.5) - self.normal.cdf(x - 0.5)).float()


# The rounded Gaussian on the data's scale (10 * randn): the float64 reference's difference of
# CDFs underflows beyond about 8 sds, where pyro_vae's log-space form stays finite.
LOG_PROB_CASES = [(name, {"spread": 10.0} if name == "discretized_gaussian" else {}) for name in NAMES] + [
    ("gaussian", {"min_scale": 0.1}),
    ("gaussian_shared", {"init_scale": 0.3}),
    ("gaussian_fixed", {"scale": 0.25}),
    ("student_t", {"df": 2.5}),
    ("bernoulli", {"strict": False}),
]


@pytest.mark.parametrize(
    "name, options", LOG_PROB_CASES, ids=[f"{n}-{o}" if o else n for n, o in LOG_PROB_CASES]
)
def test_log_prob_matches_torch(name, options):
    lik = make(name, **options)
    # Move learned per-feature parameters away from their (uniform) initial values so that
    # a feature mix-up would be caught.
    with torch.no_grad():
        for p in lik.parameters():
            p.add_(0.5 * torch.randn_like(p))
    params = 2.0 * torch.randn(2, 6, lik.num_params, INPUT_DIM)
    x = valid_data(lik.support.name, (2, 6, INPUT_DIM))
    expected = _expected(name, lik, params)
    got = lik(params)
    have, want = got.log_prob(x), expected.log_prob(x)
    if name == "discretized_gaussian":
        # A float64 difference of CDFs is exact to ~1e-7 only above e^-20; the tails are
        # tested against scipy's log_ndtr below.
        assert torch.isfinite(have).all()
        have, want = have[want > -20], want[want > -20]
        assert want.numel() > 20
    # the Woodbury form sums terms far larger than the result: float32 keeps ~6 digits of them
    tol = {"rtol": 1e-5, "atol": 1e-4} if name == "gaussian_lowrank" else {}
    torch.testing.assert_close(have, want, **tol)
    torch.testing.assert_close(got.mean, expected.mean)


def test_discretized_gaussian_is_a_pmf_accurate_in_both_tails():
    from scipy.special import log_ndtr

    from pyro_vae.distributions.likelihoods import DiscretizedNormal

    d = DiscretizedNormal(torch.tensor(0.3), torch.tensor(2.0))
    assert d.log_prob(torch.arange(-60.0, 61.0)).exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    loc, scale = torch.tensor([0.0, 0.0, 5.0]), torch.tensor([1.0, 0.5, 0.1])
    x = torch.tensor([-30.0, 25.0, 12.0])  # 30, 50 and 70 sds out, on both sides
    a, b = ((x - 0.5 - loc) / scale).double().numpy(), ((x + 0.5 - loc) / scale).double().numpy()
    upper = a > 0
    a, b = np.where(upper, -b, a), np.where(upper, -a, b)
    want = log_ndtr(b) + np.log(-np.expm1(log_ndtr(a) - log_ndtr(b)))
    got = DiscretizedNormal(loc, scale).log_prob(x)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4)


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
def test_bernoulli_log_prob_equals_torch_cross_entropy(grad):
    """x*l - softplus(l) (both code paths) against torch's Bernoulli, broadcast as in evaluation."""
    logits = torch.cat(
        [torch.randn(7, 3, 50) * 6, torch.tensor([-80.0, -20, -1e-3, 0, 1e-3, 20, 80]).expand(7, 3, 7)], -1
    )
    logits = logits.double().requires_grad_(grad)
    x = (torch.rand(3, 57) < 0.4).double()  # one row per point, broadcast over 7 draws
    for value in (x, torch.rand(3, 57, dtype=torch.float64)):  # binary, and grey levels (strict=False)
        with torch.set_grad_enabled(grad):
            got = likelihoods.BernoulliLogits(logits=logits, validate_args=False).log_prob(value)
        expected = td.Bernoulli(logits=logits, validate_args=False).log_prob(value)
        assert got.shape == expected.shape == (7, 3, 57)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=3e-9)  # softplus(l) = l above l = 20
        if grad:
            (g,) = torch.autograd.grad(got.sum(), logits)
            (e,) = torch.autograd.grad(expected.sum(), logits)
            torch.testing.assert_close(g, e)
    expanded = likelihoods.BernoulliLogits(logits=logits[0].detach()).expand((7, 3, 57))
    assert type(expanded) is likelihoods.BernoulliLogits  # the plates' expand keeps the fast log_prob


def test_gaussian_shared_starts_at_init_scale_and_is_per_feature():
    lik = make("gaussian_shared", init_scale=0.7)
    assert lik.raw_scale.shape == (INPUT_DIM,)
    torch.testing.assert_close(lik.scale, torch.full((INPUT_DIM,), 0.7))
    d = lik(torch.randn(4, 1, INPUT_DIM))
    torch.testing.assert_close(d.scale, torch.full((4, INPUT_DIM), 0.7))


def test_student_t_learned_df_starts_at_four_and_stays_above_one():
    lik = make("student_t")
    assert isinstance(lik.raw_df, torch.nn.Parameter)
    assert lik.raw_df.shape == (INPUT_DIM,)
    torch.testing.assert_close(lik.degrees_of_freedom(), torch.full((INPUT_DIM,), 4.0))
    with torch.no_grad():
        lik.raw_df.fill_(-5.0)
    assert (lik.degrees_of_freedom() > 1.0).all()
    with torch.no_grad():
        lik.raw_df.fill_(-1e4)
    assert (lik.degrees_of_freedom() >= 1.0).all()  # 1 + softplus(-1e4) rounds to 1 in float32
    fixed = make("student_t", df=7.0)
    assert not hasattr(fixed, "raw_df")
    assert list(fixed.parameters()) == []
    assert lik(torch.randn(3, 2, INPUT_DIM)).df.shape == (3, INPUT_DIM)


def test_continuous_bernoulli_closed_form():
    """C(l) l^x (1-l)^(1-x) with C(l) = 2 artanh(1 - 2l) / (1 - 2l), away from l = 0.5."""
    lik = make("continuous_bernoulli", input_dim=4)
    logits = torch.tensor([-4.0, -1.0, 0.7, 3.0], dtype=torch.float64)
    lam = torch.sigmoid(logits)
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64).unsqueeze(-1)  # (5, 1)
    log_c = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    expected = log_c + x * torch.log(lam) + (1 - x) * torch.log1p(-lam)  # (5, 4)
    got = lik(logits.expand(5, 1, 4)).log_prob(x.expand(5, 4))
    torch.testing.assert_close(got, expected)


def _trapezoid_density_integral(lik, logit: float, n: int = 20001) -> float:
    grid = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    params = torch.full((n, 1, 1), logit, dtype=torch.float64)
    density = lik(params).log_prob(grid.unsqueeze(-1)).squeeze(-1).exp()
    return torch.trapezoid(density, grid).item()


LOGITS = [-5.0, -2.0, -0.3, 0.0, 0.4, 1.5, 6.0]


def test_continuous_bernoulli_integrates_to_one():
    lik = make("continuous_bernoulli", input_dim=1)
    for logit in LOGITS:
        assert _trapezoid_density_integral(lik, logit) == pytest.approx(1.0, abs=1e-4), logit


def test_bernoulli_cross_entropy_is_not_a_density_on_grey_levels():
    """Why the library refuses Bernoulli on grey levels: its formula is not normalised on [0, 1]."""
    lik = make("bernoulli", input_dim=1, strict=False)
    integrals = [_trapezoid_density_integral(lik, logit) for logit in LOGITS]
    assert max(abs(i - 1.0) for i in integrals) > 0.01
    # At logit 0 the integrand is the constant 1/2.
    assert integrals[LOGITS.index(0.0)] == pytest.approx(0.5, abs=1e-6)
    assert all(i < 1.0 for i in integrals)


# --------------------------------------------------------------------------- support checks


# Every finite value is in the real support, so only the other likelihoods can reject finite data.
BOUNDED_NAMES = [n for n in NAMES if likelihoods.REGISTRY.get(n).support.name != "real"]


def test_bounded_names_cover_all_supports():
    supports = {likelihoods.REGISTRY.get(n).support.name for n in BOUNDED_NAMES}
    assert supports == set(INVALID_DATA)


@pytest.mark.parametrize("name", BOUNDED_NAMES)
def test_check_data_rejects_values_outside_support(name):
    lik = make(name)
    support = lik.support
    for bad in INVALID_DATA[support.name]:
        x = valid_data(support.name, (3, INPUT_DIM))
        x[1, 2] = bad
        assert not support.contains(x)
        with pytest.raises(ValueError) as excinfo:
            lik.check_data(x)
        message = str(excinfo.value)
        assert support.description in message, message
        assert repr(name) in message
        assert "1 values lie outside" in message
        assert f"{bad:.6g}" in message


@pytest.mark.parametrize("name", NAMES)
def test_check_data_accepts_valid_data(name):
    lik = make(name)
    lik.check_data(valid_data(lik.support.name, (8, INPUT_DIM)))


def test_bernoulli_on_grey_levels_suggests_continuous_bernoulli():
    x = torch.tensor([[0.0, 0.25, 1.0], [0.5, 1.0, 0.0]])
    with pytest.raises(DataError, match="continuous_bernoulli") as excinfo:
        make("bernoulli", input_dim=3).check_data(x)
    message = str(excinfo.value)
    assert "the values 0 and 1" in message
    # The remedy is named for Python callers and for the command line alike.
    assert "likelihood='continuous_bernoulli'" in message
    assert "(command line: --likelihood continuous_bernoulli)" in message
    assert "standardize=True" in message and "--standardize" in message


def test_bernoulli_not_strict_accepts_grey_levels():
    lik = make("bernoulli", input_dim=3, strict=False)
    x = torch.tensor([[0.0, 0.25, 1.0], [0.5, 1.0, 0.0]])
    lik.check_data(x)
    assert not lik.discrete
    logits = torch.randn(2, 3)
    lp = lik(logits.unsqueeze(-2)).log_prob(x)
    # The cross-entropy formula x log p + (1 - x) log(1 - p).
    torch.testing.assert_close(lp, x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lik.check_data(torch.tensor([[0.0, 1.5, 1.0]]))
    # The class-level default is untouched: a strict instance still rejects grey levels.
    with pytest.raises(ValueError):
        make("bernoulli", input_dim=3).check_data(x)


def test_poisson_on_negative_values_suggests_gaussian():
    x = torch.tensor([[0.0, 3.0, -2.0]])
    with pytest.raises(ValueError, match="likelihood='gaussian'") as excinfo:
        make("poisson", input_dim=3).check_data(x)
    assert "the integers 0, 1, 2, ..." in str(excinfo.value)
    assert "--likelihood gaussian" in str(excinfo.value)


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_beta_rejects_exact_endpoints(edge):
    x = torch.tensor([[0.3, edge, 0.6]])
    with pytest.raises(ValueError, match="open interval"):
        make("beta", input_dim=3).check_data(x)


@pytest.mark.parametrize(
    "support",
    [
        likelihoods.REAL,
        likelihoods.BINARY,
        likelihoods.UNIT_INTERVAL,
        likelihoods.OPEN_UNIT_INTERVAL,
        likelihoods.NONNEGATIVE_INTEGER,
    ],
    ids=lambda s: s.name,
)
@pytest.mark.parametrize("value", [math.inf, -math.inf], ids=["inf", "-inf"])
def test_supports_exclude_non_finite_values(support, value):
    """No support contains inf (REAL is described as "any finite real number"); NaN marks a
    missing cell, which is not checked, and the placeholder that replaces it lies inside."""
    x = torch.tensor([1.0, value])
    assert not support.contains(x)
    assert bool(support.check(torch.tensor([support.placeholder])).all())
    assert support.contains(torch.tensor([1.0 if support.name != "open_unit_interval" else 0.5, math.nan]))


# --------------------------------------------------------------------------- choose_likelihood


@pytest.mark.parametrize(
    "x, expected",
    [
        (torch.tensor([[0.0, 1.0], [1.0, 1.0]]), "bernoulli"),
        (torch.tensor([[0.0, 0.5], [1.0, 0.2]]), "continuous_bernoulli"),
        (torch.tensor([[0.0, 3.0], [12.0, 1.0]]), "negative_binomial"),
        (torch.tensor([[0.0, -0.5], [1.0, 2.0]]), "gaussian"),
        (torch.tensor([[0.5, 2.5]]), "gaussian"),
    ],
    ids=["binary", "grey", "counts", "negative", "positive-reals"],
)
def test_choose_likelihood(x, expected):
    name, reason = choose_likelihood(x)
    assert name == expected
    assert isinstance(reason, str) and reason
    assert name in NAMES


@pytest.mark.parametrize(
    "batches, expected",
    [
        ([torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])], "bernoulli"),
        ([torch.tensor([[0.0, 1.0]]), torch.tensor([[0.3, 0.9]])], "continuous_bernoulli"),
        ([torch.tensor([[0.0, 1.0]]), torch.tensor([[4.0, 2.0]])], "negative_binomial"),
        ([torch.tensor([[0.3, 1.0]]), torch.tensor([[4.0, 2.0]])], "gaussian"),
        ([torch.tensor([[0.0, 4.0]]), torch.tensor([[-1.0, 2.0]])], "gaussian"),
    ],
    ids=["binary+binary", "binary+grey", "binary+counts", "grey+counts", "counts+negative"],
)
def test_choose_likelihood_over_batches(batches, expected):
    assert choose_likelihood(batches)[0] == expected
    assert choose_likelihood(iter(batches))[0] == expected  # any iterable, used once


# --------------------------------------------------------------------------- registry


def test_unknown_name_lists_names_and_suggests_close_match():
    with pytest.raises(ValueError) as excinfo:
        likelihoods.create("gausian")
    message = str(excinfo.value)
    assert "Did you mean 'gaussian'?" in message
    for name in NAMES:
        assert name in message


def test_unknown_name_without_close_match():
    with pytest.raises(ValueError, match="unknown likelihood 'xyzzy'") as excinfo:
        likelihoods.create("xyzzy")
    assert "Did you mean" not in str(excinfo.value)


def test_unknown_option_names_allowed_options():
    with pytest.raises(ValueError) as excinfo:
        likelihoods.create("gaussian", min_scal=0.1)
    message = str(excinfo.value)
    assert "min_scal" in message
    assert "min_scale" in message.split("takes:")[1]
    with pytest.raises(ValueError, match="takes: none"):
        likelihoods.create("continuous_bernoulli", strict=False)


def test_create_from_dict_and_instance():
    lik = likelihoods.create({"name": "student_t", "options": {"df": 3.0, "min_scale": 0.01}})
    assert isinstance(lik, likelihoods.StudentT)
    assert lik.df == 3.0 and lik.min_scale == 0.01
    assert isinstance(likelihoods.create({"name": "laplace"}), likelihoods.Laplace)
    # Keyword options override those in the dict.
    assert (
        likelihoods.create({"name": "gaussian", "options": {"min_scale": 0.5}}, min_scale=0.2).min_scale
        == 0.2
    )
    instance = likelihoods.Gaussian(min_scale=0.1)
    assert likelihoods.create(instance) is instance
    with pytest.raises(ValueError, match="only be given with a likelihood name"):
        likelihoods.create(instance, min_scale=0.2)
    with pytest.raises(ValueError, match="'name'"):
        likelihoods.create({"options": {}})
    with pytest.raises(ValueError, match="'name'"):
        likelihoods.create({"name": "gaussian", "extra": 1})


def test_name_and_class_construction_agree():
    assert (
        likelihoods.create("gaussian", min_scale=0.01).spec() == likelihoods.Gaussian(min_scale=0.01).spec()
    )
    assert likelihoods.Gaussian.name == "gaussian"
    assert likelihoods.ContinuousBernoulli.name == "continuous_bernoulli"


SPEC_OPTIONS = {
    "gaussian": {"min_scale": 0.02},
    "gaussian_shared": {"init_scale": 2.0, "min_scale": 0.01},
    "gaussian_fixed": {"scale": 0.3},
    "gaussian_optimal": {"min_log_scale": -4.0, "momentum": 0.5},
    "bernoulli": {"strict": False},
    "beta": {"min_concentration": 0.1},
    "laplace": {"min_scale": 0.05},
    "student_t": {"df": 6.0},
    "poisson": {"min_rate": 1e-4},
    "negative_binomial": {"min_total_count": 0.01},
    "gaussian_lowrank": {"rank": 3, "min_scale": 0.01},
    "point_masses": {"atoms": [-1.0, 0.0, 2.5], "center": 3.0, "spread": 2.0},
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
def test_spec_round_trips(name, custom):
    options = SPEC_OPTIONS.get(name, {}) if custom else {}
    lik = likelihoods.create(name, **options)
    spec = lik.spec()
    assert spec["name"] == name
    for key, value in options.items():
        assert spec["options"][key] == value
    spec = json.loads(json.dumps(spec))  # JSON-serialisable
    again = likelihoods.create(spec)
    assert type(again) is type(lik)
    assert again.spec() == lik.spec()
    # Rebuilt and set up, both score data identically.
    lik.setup(INPUT_DIM)
    again.setup(INPUT_DIM)
    params = torch.randn(4, lik.num_params, INPUT_DIM)
    x = valid_data(lik.support.name, (4, INPUT_DIM))
    torch.testing.assert_close(again(params).log_prob(x), lik(params).log_prob(x))


@pytest.mark.parametrize(
    "name, options",
    [
        ("gaussian", {"min_scale": 0.0}),
        ("gaussian", {"min_scale": -1.0}),
        ("gaussian_fixed", {"scale": -1.0}),
        ("gaussian_fixed", {"scale": 0.0}),
        ("gaussian_shared", {"min_scale": 0.0}),
        ("gaussian_optimal", {"momentum": 0.0}),
        ("gaussian_optimal", {"momentum": 1.5}),
        ("gaussian_optimal", {"min_log_scale": float("inf")}),
        ("gaussian_shared", {"init_scale": 0.5, "min_scale": 1.0}),
        ("beta", {"min_concentration": 0.0}),
        ("laplace", {"min_scale": 0.0}),
        ("student_t", {"df": 0.0}),
        ("student_t", {"df": -2.0}),
        ("student_t", {"min_scale": 0.0}),
        ("poisson", {"min_rate": -1.0}),
        ("negative_binomial", {"min_total_count": -1.0}),
        ("gaussian_lowrank", {"rank": 0}),
        ("gaussian_lowrank", {"min_scale": 0.0}),
        ("point_masses", {"atoms": []}),
        ("point_masses", {"atoms": [1.0, 0.0]}),
        ("point_masses", {"atoms": [float("nan")]}),
        ("point_masses", {"spread": 0.0}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_invalid_constructor_values(name, options):
    (key,) = list(options)[-1:]
    with pytest.raises(ValueError, match=key):
        likelihoods.create(name, **options)


# --------------------------------------------------------------------------- Gaussian floor


def test_gaussian_scale_floor():
    lik = make("gaussian", input_dim=3, min_scale=1e-3)
    params = torch.stack([torch.zeros(2, 3), torch.full((2, 3), -1e4)], dim=-2)
    d = lik(params)
    torch.testing.assert_close(d.scale, torch.full((2, 3), 1e-3))
    lp = d.log_prob(torch.tensor([[0.0, 0.01, -0.5], [1.0, 0.0, 2.0]]))
    assert torch.isfinite(lp).all()
    # At the mean the density is exactly that of N(0, min_scale^2).
    assert lp[0, 0].item() == pytest.approx(-math.log(1e-3) - 0.5 * math.log(2 * math.pi), rel=1e-5)


@pytest.mark.parametrize("name", ["gaussian", "laplace", "student_t"])
def test_learned_scale_floors_keep_log_prob_finite(name):
    lik = make(name, input_dim=3)
    params = torch.stack([torch.zeros(2, 3), torch.full((2, 3), -1e4)], dim=-2)
    d = lik(params)
    torch.testing.assert_close(d.scale, torch.full((2, 3), lik.min_scale))
    assert torch.isfinite(d.log_prob(3.0 * torch.randn(2, 3))).all()


# --------------------------------------------------------------------------- through the VAE


@pytest.mark.parametrize("name", NAMES)
def test_vae_decode_with_every_likelihood(name):
    vae = pyro_vae.VAE(input_dim=6, latent_dim=2, hidden=(8,), likelihood=name)
    assert vae.likelihood.name == name
    assert vae.decoder.num_params == vae.likelihood.num_params
    z = torch.randn(4, 2)
    d = vae.decode(z)
    assert d.event_shape == (6,)
    assert d.batch_shape == (4,)
    x = valid_data(vae.likelihood.support.name, (4, 6))
    vae.check_data(x)
    lp = d.log_prob(x)
    assert lp.shape == (4,)
    assert torch.isfinite(lp).all()
    assert vae.data_mean(d).shape == (4, 6)
    # Particles of codes broadcast through the decoder.
    assert vae.decode(torch.randn(3, 4, 2)).batch_shape == (3, 4)


def test_vae_with_likelihood_instance():
    lik = likelihoods.Gaussian(min_scale=0.1)
    vae = pyro_vae.VAE(input_dim=6, latent_dim=2, hidden=(8,), likelihood=lik)
    assert vae.likelihood is lik
    assert vae.config()["likelihood"] == {"name": "gaussian", "options": {"min_scale": 0.1}}
    d = vae.decode(torch.randn(4, 2))
    assert d.event_shape == (6,)
    assert (d.base_dist.scale >= 0.1).all()
    assert torch.isfinite(d.log_prob(torch.randn(4, 6))).all()


def test_vae_with_likelihood_spec_dict():
    vae = pyro_vae.VAE(
        input_dim=6, latent_dim=2, hidden=(8,), likelihood={"name": "student_t", "options": {"df": 3.0}}
    )
    assert vae.likelihood.df == 3.0
    assert vae.decode(torch.randn(4, 2)).event_shape == (6,)


def test_vae_learned_likelihood_parameters_are_trained():
    vae = pyro_vae.VAE(input_dim=6, latent_dim=2, hidden=(8,), likelihood="gaussian_shared")
    ids = {id(p) for p in vae.parameters()}
    assert id(vae.likelihood.raw_scale) in ids
    vae.decode(torch.randn(4, 2)).log_prob(torch.randn(4, 6)).sum().backward()
    assert vae.likelihood.raw_scale.grad is not None
    assert vae.likelihood.raw_scale.grad.abs().sum() > 0


def test_vae_check_data_rejects_outside_support():
    vae = pyro_vae.VAE(input_dim=3, latent_dim=2, hidden=(8,), likelihood="bernoulli")
    with pytest.raises(ValueError, match="continuous_bernoulli"):
        vae.check_data(torch.tensor([[0.0, 0.5, 1.0]]))


# --------------------------------------------------------------------------- gaussian_optimal


def test_gaussian_optimal_scale_is_the_batch_rmse_and_a_constant():
    lik = make("gaussian_optimal")
    lik.train()
    loc = torch.randn(2, 8, INPUT_DIM, requires_grad=True)  # (particles, batch, D)
    x = 3.0 * torch.randn(8, INPUT_DIM)
    d = lik.observation(loc.unsqueeze(-2), x)
    rmse = ((x - loc.detach()) ** 2).mean().sqrt()
    torch.testing.assert_close(d.scale, rmse.expand(2, 8, INPUT_DIM))
    # sigma* is held constant: the gradient is that of a fixed-sigma Gaussian.
    d.log_prob(x).sum().backward()
    torch.testing.assert_close(loc.grad, ((x - loc) / rmse**2).detach())
    # ... and it is the maximum-likelihood scale: nudging it either way lowers the log-likelihood.
    for factor in (0.9, 1.1):
        other = td.Normal(loc.detach(), factor * rmse).log_prob(x).sum()
        assert other < td.Normal(loc.detach(), rmse).log_prob(x).sum()


def test_gaussian_optimal_floor_and_running_scale_for_evaluation():
    lik = make("gaussian_optimal", min_log_scale=-3.0, momentum=0.5)
    lik.train()
    x = torch.randn(5, INPUT_DIM)
    d = lik.observation(x.unsqueeze(-2), x)  # perfect reconstruction: sigma* = 0, floored
    torch.testing.assert_close(d.scale, torch.full_like(x, math.exp(-3.0)))
    lik.running_variance.fill_(1.0)
    loc = torch.zeros(5, INPUT_DIM)
    lik.observation(loc.unsqueeze(-2), 2.0 * torch.ones(5, INPUT_DIM))  # batch variance 4
    torch.testing.assert_close(lik.running_variance, torch.tensor(2.5))  # 1 + 0.5 * (4 - 1)
    # Outside training, the observed batch does not set the scale: the running value does.
    lik.eval()
    d = lik.observation(loc.unsqueeze(-2), 100.0 * torch.ones(5, INPUT_DIM))
    torch.testing.assert_close(d.scale, torch.full_like(loc, math.sqrt(2.5)))
    torch.testing.assert_close(lik.running_variance, torch.tensor(2.5))


def test_gaussian_optimal_running_scale_is_saved_with_the_model(tmp_path):
    vae = pyro_vae.VAE(INPUT_DIM, 2, hidden=(8,), likelihood="gaussian_optimal")
    vae.likelihood.running_variance.fill_(0.37)
    vae.save(tmp_path / "m")
    again = pyro_vae.VAE.load(tmp_path / "m")
    torch.testing.assert_close(again.likelihood.running_variance, torch.tensor(0.37))


@pytest.mark.parametrize(
    "spec, pattern",
    [
        (42, "got 42"),
        (None, "got None"),
        (True, "got True"),
        (likelihoods.Gaussian, "the class Gaussian, not an instance.*'gaussian'"),
        (pyro_vae.distributions.priors.StandardNormal(), "pyro_vae.distributions.priors.StandardNormal"),
        (
            {"name": "gaussian", "options": "min_scale=0.1"},
            "'options' of likelihood 'gaussian' must be a dict",
        ),
        ({"name": None}, "must be a string"),
    ],
)
def test_create_rejects_what_is_not_a_name_spec_or_instance(spec, pattern):
    with pytest.raises(ConfigError, match=pattern) as excinfo:
        likelihoods.create(spec)
    assert isinstance(excinfo.value, ValueError)
    if not isinstance(spec, (dict, type)):
        assert "a registered name (bernoulli, " in str(excinfo.value)
        assert "a dict {'name': ..., 'options': {...}} or a Likelihood instance" in str(excinfo.value)
    with pytest.raises(ConfigError, match=pattern):
        pyro_vae.VAE(4, 2, hidden=(8,), likelihood=spec)


def test_registering_a_non_likelihood_is_refused():
    with pytest.raises(ConfigError, match="only subclasses of Likelihood"):
        likelihoods.register("not_a_likelihood")(pyro_vae.distributions.priors.StandardNormal)
    assert "not_a_likelihood" not in likelihoods.names()
