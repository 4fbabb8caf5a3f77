"""point_masses: atoms mixed with a Gaussian, against closed forms (probabilities, densities, the MLE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pyro_vae
from pyro_vae.data import columns
from pyro_vae.data.tables import load_table
from pyro_vae.distributions import likelihoods

ATOMS = [0.0, 3.0, 4.0]


def make(atoms=ATOMS, d: int = 1, **options) -> likelihoods.Likelihood:
    lik = likelihoods.create("point_masses", atoms=atoms, **options)
    lik.setup(d)
    return lik


def params_of(weights, mu, sigma, lik) -> torch.Tensor:
    """Decoder outputs giving mixture weights ``weights`` (atoms', then the density's), and the
    Gaussian's mean and sd ``mu``, ``sigma`` in the data's units; shape (1, K + 3, 1)."""
    logits = [math.log(w) for w in weights]
    loc = (mu - lik.center) / lik.spread
    raw = math.log(math.expm1(sigma / lik.spread - lik.min_scale))  # the inverse of softplus
    return torch.tensor([[*logits, loc, raw]], dtype=torch.float64).unsqueeze(-1)


def test_log_prob_is_the_atoms_probability_or_the_weighted_density():
    lik = make(center=2.0, spread=3.0)
    weights = [0.2, 0.1, 0.3, 0.4]
    d = lik(params_of(weights, mu=1.5, sigma=0.7, lik=lik))
    x = torch.tensor([0.0, 3.0, 4.0, 3.5, -1.0], dtype=torch.float64).reshape(5, 1)
    got = d.log_prob(x).squeeze(-1)
    normal = [
        math.log(0.4) - 0.5 * math.log(2 * math.pi * 0.7**2) - (v - 1.5) ** 2 / (2 * 0.7**2)
        for v in (3.5, -1.0)
    ]
    want = torch.tensor([math.log(0.2), math.log(0.1), math.log(0.3), *normal], dtype=torch.float64)
    torch.testing.assert_close(got, want)
    # the mean: sum_k pi_k a_k + pi_0 mu
    torch.testing.assert_close(
        d.mean.squeeze(), torch.tensor(0.1 * 3 + 0.3 * 4 + 0.4 * 1.5, dtype=torch.float64)
    )


def test_the_measure_sums_to_one():
    lik = make()
    d = lik(params_of([0.25, 0.15, 0.1, 0.5], mu=3.2, sigma=1.3, lik=lik))
    grid = torch.linspace(-12, 18, 300001, dtype=torch.float64).reshape(-1, 1)
    density = d.log_prob(grid).exp().squeeze(-1)  # the atoms are single grid points: no mass there
    continuous = torch.trapezoid(density, grid.squeeze(-1))
    atoms = d.log_prob(torch.tensor(ATOMS, dtype=torch.float64).reshape(-1, 1)).exp().sum()
    torch.testing.assert_close(continuous + atoms, torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_maximum_likelihood_is_the_atoms_shares_and_the_gaussian_fit_of_the_rest():
    """With the atoms and the density on disjoint sets, the MLE is closed form: pi_k = n_k / n
    and the Gaussian's mean and (biased) sd of the values off the atoms; there the gradient is 0."""
    rng = np.random.default_rng(0)
    values = np.concatenate([np.zeros(30), np.full(12, 3.0), np.full(8, 4.0), rng.normal(2.0, 1.5, 50)])
    x = torch.tensor(values).reshape(-1, 1)
    off = values[50:]
    weights = [30 / 100, 12 / 100, 8 / 100, 50 / 100]
    lik = make(center=1.0, spread=2.0)
    params = params_of(weights, mu=off.mean(), sigma=off.std(), lik=lik).requires_grad_()
    total = lik(params).log_prob(x).sum()
    closed = (
        sum(n * math.log(n / 100) for n in (30, 12, 8, 50))
        - 25 * math.log(2 * math.pi * off.var())
        - 25  # sum of (x - mean)^2 / (2 var) at the MLE: n / 2
    )
    torch.testing.assert_close(total, torch.tensor(closed, dtype=torch.float64))
    (grad,) = torch.autograd.grad(total, params)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-8, rtol=0)


def test_draws_hit_the_atoms_at_their_probabilities():
    lik = make(d=2)
    params = params_of([0.3, 0.2, 0.1, 0.4], mu=10.0, sigma=0.5, lik=lik).expand(1, 6, 2)
    torch.manual_seed(0)
    draws = lik(params).sample((20000,))
    assert draws.shape == (20000, 1, 2)
    shares = [float((draws == a).double().mean()) for a in ATOMS]
    np.testing.assert_allclose(shares, [0.3, 0.2, 0.1], atol=0.01)
    off = draws[(draws != 0) & (draws != 3) & (draws != 4)]
    assert abs(float(off.mean()) - 10.0) < 0.02 and abs(float(off.std()) - 0.5) < 0.02


def test_gradients_flow_only_to_the_part_that_scored_the_value():
    lik = make()
    params = torch.randn(1, lik.num_params, 1, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(
        lik(params).log_prob(torch.tensor([[3.0]], dtype=torch.float64)).sum(), params
    )
    assert grad[0, -2:].abs().max() == 0  # an atom's probability does not depend on the Gaussian
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing-cells"])
def test_a_zero_inflated_column_inside_columns_trains_and_evaluates(missing):
    torch.manual_seed(0)
    n = 200
    amount = torch.where(torch.rand(n) < 0.4, torch.zeros(n), torch.exp(torch.randn(n)))
    x = torch.stack([torch.randn(n), amount], 1)
    if missing:
        x[::5, 1] = float("nan")
    spec = {"name": "columns", "options": {"columns": ["gaussian", {"name": "point_masses", "options": {}}]}}
    vae = pyro_vae.VAE(2, 1, hidden=(8,), likelihood=spec, missing=missing)
    pyro_vae.fit(vae, x, epochs=2, progress=False, seed=0)
    m = pyro_vae.evaluate(vae, x[:50], num_samples=8, seed=0)
    assert math.isfinite(m["log_likelihood"])
    filled = vae.impute(x[:50], num_samples=8)
    assert torch.isfinite(filled).all()


# --------------------------------------------------------------------------- the column kind


def zero_inflated(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amount = np.where(rng.uniform(size=n) < 0.4, 0.0, np.round(rng.lognormal(3.0, 1.0, n), 2))
    return np.stack([rng.normal(size=n), amount], 1)


def test_a_zero_inflated_column_is_its_own_kind_kept_in_its_units():
    splits = load_table(zero_inflated(), names=["x", "amount"], seed=0)
    real, amount = splits.columns.columns
    assert real.kind == "real" and amount.kind == "point_masses"
    assert amount.likelihood["options"]["atoms"] == [0.0]
    assert not amount.standardize  # probabilities at the atom need no Jacobian; the density is per unit
    kept = splits.train[:, 1].numpy()  # float32, as the raw values are held in the model
    assert np.isin(kept, zero_inflated()[:, 1].astype(np.float32)).all() and (kept == 0).mean() > 0.3


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).normal(size=300),  # no repeated values
        np.round(np.random.default_rng(0).normal(50, 10, 300)),  # integers: a kind of their own
        np.where(
            np.random.default_rng(0).uniform(size=300) < 0.97, 1.5, np.random.default_rng(1).normal(size=300)
        ),
        np.round(np.random.default_rng(0).normal(5.0, 0.8, 300), 1),  # iris' 0.1 cm: no value stands out
    ],
    ids=["continuous", "integers", "almost-constant", "rounded-to-a-grid"],
)
def test_columns_without_a_density_beside_their_atoms_are_not_point_masses(values):
    spec = columns.detect(columns.ColumnStats.of(values, "v"))
    assert spec.kind != "point_masses"


def test_diabetes_s4_is_point_masses():
    datasets = pytest.importorskip("sklearn.datasets")
    frame = datasets.load_diabetes(as_frame=True, scaled=False).frame
    spec = columns.detect(columns.ColumnStats.of(frame["s4"].to_numpy(), "s4"))
    assert spec.kind == "point_masses"
    assert spec.likelihood["options"]["atoms"] == [2.0, 3.0, 4.0, 5.0, 6.0]
