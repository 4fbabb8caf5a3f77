r"""Guides (pyro_vae.distributions.guides): densities against independent computations, the exact posterior
of factor analysis, training, saving and loading, and missing cells, for every guide."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_vae
from pyro_vae.app.config import RunConfig
from pyro_vae.app.diagnose import diagnose_run
from pyro_vae.distributions import guides
from pyro_vae.errors import ConfigError
from pyro_vae.infer.refine import evaluate_refined, refine
from tests.ddp_worker import TABLE_SPECS, data_for

GUIDES = {
    "diagonal": "diagonal",
    "lowrank": "lowrank",
    "lowrank_rank1": {"name": "lowrank", "options": {"rank": 1}},
    "flow": "flow",
    "flow_spline": {"name": "flow", "options": {"transform": "spline", "layers": 1, "hidden": [8]}},
}


def encoder_output(n: int = 4, latent: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent, generator=g), 0.3 + torch.rand(n, latent, generator=g)


def built(spec, latent: int = 3, seed: int = 0) -> guides.Guide:
    torch.manual_seed(seed)
    guide = guides.create(spec)
    guide.setup(latent)
    return guide


# --------------------------------------------------------------------------- densities


def test_the_diagonal_guide_is_the_encoders_gaussian():
    loc, scale = encoder_output()
    q = built("diagonal")(loc, scale)
    z = q.rsample((5,))
    by_hand = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(q.log_prob(z), by_hand)
    assert (q.batch_shape, q.event_shape) == ((4,), (3,))


@pytest.mark.parametrize("spec", [GUIDES["lowrank"], GUIDES["lowrank_rank1"]], ids=["full", "rank1"])
def test_the_lowrank_density_of_its_own_draws_is_the_gaussian_formula(spec):
    loc, scale = encoder_output()
    guide = built(spec)
    q = guide(loc, scale)
    z = q.rsample((6,))
    factor = guide.factor(guides.context(loc, scale)).unflatten(-1, (3, guide.columns)).double()
    cov = torch.diag_embed(scale.double() ** 2) + factor @ factor.transpose(-1, -2)
    diff = (z.double() - loc.double()).unsqueeze(-1)
    maha = (diff.transpose(-1, -2) @ torch.linalg.solve(cov, diff)).squeeze(-1).squeeze(-1)
    by_hand = -0.5 * maha - 0.5 * torch.logdet(cov) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(q.log_prob(z).double(), by_hand, rtol=1e-5, atol=1e-5)
    mean, sd = guide.moments(q)
    torch.testing.assert_close(sd.double(), cov.diagonal(dim1=-2, dim2=-1).sqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, loc)


@pytest.mark.parametrize("spec", [GUIDES["flow"], GUIDES["flow_spline"]], ids=["affine", "spline"])
def test_the_flow_density_of_its_own_draws_uses_the_jacobians_determinant(spec):
    """log q(z) = log N(z0; mu, sigma) - log|det df/dz0|, the Jacobian by autograd on the
    whole batch (its off-diagonal point blocks are zero), against Pyro's cached log density."""
    loc, scale = encoder_output()
    guide = built(spec)
    q = guide(loc, scale)
    torch.manual_seed(3)
    z = q.rsample()
    torch.manual_seed(3)
    z0 = q.base_dist.rsample()  # the same base draw

    def push(v):
        for t in q.transforms:
            v = t(v)
        return v

    torch.testing.assert_close(push(z0), z)
    jac = torch.autograd.functional.jacobian(push, z0)  # (n, L, n, L)
    blocks = torch.stack([jac[i, :, i, :] for i in range(z0.shape[0])]).double()
    off = jac.clone()
    for i in range(z0.shape[0]):
        off[i, :, i, :] = 0
    assert off.abs().max() == 0
    by_hand = dist.Normal(loc, scale).log_prob(z0).sum(-1).double() - torch.linalg.slogdet(blocks)[1]
    torch.testing.assert_close(q.log_prob(z).double(), by_hand, rtol=1e-5, atol=1e-5)
    # at a point it did not draw, Pyro inverts the layers: the same density
    torch.testing.assert_close(q.log_prob(z.detach().clone()), q.log_prob(z), rtol=1e-4, atol=1e-4)


def test_the_flow_guide_is_not_a_diagonal_gaussian():
    """Its marginals have no closed form: moments come from draws, in a private stream."""
    loc, scale = encoder_output()
    guide = built("flow")
    q = guide(loc, scale)
    assert guide.marginals(q) is None
    state = torch.get_rng_state()
    mean, sd = guide.moments(q)
    assert torch.equal(torch.get_rng_state(), state)
    z = q.sample((20000,))
    se = z.std(0) / math.sqrt(guides.MOMENT_DRAWS)  # the standard error of the estimate
    assert ((mean - z.mean(0)).abs() < 4 * se).all()
    assert ((sd / z.std(0) - 1).abs() < 0.15).all()


def test_the_lowrank_factor_starts_small_also_after_reset_parameters():
    """Nearly the diagonal guide at the start: entries at most 1/100 of torch's bound 1/sqrt(fan_in)."""
    vae = pyro_vae.VAE(6, 3, hidden=(8,), likelihood="gaussian", guide="lowrank")
    vae.reset_parameters(0)
    bound = guides.FACTOR_INIT_SCALE / math.sqrt(6)
    factor = vae.variational.factor
    assert 0 < factor.weight.abs().max() <= bound and factor.bias.abs().max() <= bound


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flows", "Did you mean 'flow'"),
        ({"name": "flow", "options": {"transform": "planar"}}, "transform must be one of affine, spline"),
        ({"name": "lowrank", "options": {"rank": 0}}, "rank"),
        ({"name": "lowrank", "options": {"ranks": 2}}, "does not take option"),
    ],
)
def test_bad_guides_are_one_line_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        guides.create(spec)


# --------------------------------------------------------------------------- factor analysis

D, L = 5, 2


def fixed_factor_analysis(guide) -> tuple[pyro_vae.VAE, torch.Tensor, torch.Tensor]:
    """A linear-Gaussian VAE (factor analysis) whose decoder is fixed with nearly collinear
    columns, so that the exact posterior N(A x + c, Sigma) is strongly correlated; the data
    are drawn from it. Returns the VAE, the data and Sigma's precision."""
    torch.manual_seed(0)
    vae = pyro_vae.VAE(D, L, hidden=(), likelihood="gaussian_shared", prior="standard_normal", guide=guide)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(D, L, generator=g)
    w[:, 1] = w[:, 0] + 0.3 * torch.randn(D, generator=g)
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(w)
        vae.decoder.net[0].bias.copy_(torch.randn(D, generator=g))
    for p in [*vae.decoder.parameters(), *vae.likelihood.parameters()]:
        p.requires_grad_(False)
    x = vae.sample(256)
    psi = vae.likelihood.scale.detach().double() ** 2
    precision = torch.eye(L, dtype=torch.float64) + w.double().T @ (w.double() / psi[:, None])
    return vae, x, precision


def exact_log_px(vae, x):
    lin = vae.decoder.net[0]
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    psi = vae.likelihood.scale.detach().double() ** 2
    return dist.MultivariateNormal(b, w @ w.T + torch.diag(psi)).log_prob(x.double())


def fit_guide(vae, x, steps=1500):
    """Adam on the encoder and the guide alone (the decoder fixed): the ELBO's optimum is the
    guide family's closest member to the exact posterior in KL(q || p)."""
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    torch.manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        loss = -vae.log_weights(x, 8).log_w.mean()
        loss.backward()
        opt.step()
        sched.step()


@pytest.fixture(scope="module")
def fa_gaps():
    gaps = {}
    for name in ("diagonal", "lowrank"):
        vae, x, precision = fixed_factor_analysis(name)
        fit_guide(vae, x)
        result = pyro_vae.evaluate(vae, x, num_samples=2000)
        gaps[name] = (exact_log_px(vae, x).mean().item() - result["elbo"], result)
    # the best any diagonal Gaussian can do (reverse KL): precision's diagonal as its own
    kl_min = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()
    return gaps, kl_min


def test_the_lowrank_guide_reaches_the_exact_posterior_of_factor_analysis(fa_gaps):
    gaps, kl_min = fa_gaps
    gap, result = gaps["lowrank"]
    assert kl_min > 0.2  # the posterior is far from diagonal: the test can tell the guides apart
    assert abs(gap) < 0.02, gap
    assert abs(result["log_likelihood"] - result["elbo"]) < 0.02


def test_the_diagonal_guide_cannot_reach_it(fa_gaps):
    gaps, kl_min = fa_gaps
    gap, _ = gaps["diagonal"]
    assert gap > kl_min - 0.02, (gap, kl_min)
    assert gap > 0.2


# --------------------------------------------------------------------------- with the library


COMBINATIONS = [
    (g, lik, "standard_normal") for g in GUIDES for lik in ("bernoulli", "gaussian", "poisson")
] + [(g, "gaussian", prior) for g in GUIDES for prior in ("mixture", "vamp", "learned_normal")]


@pytest.mark.parametrize(("guide", "likelihood", "prior"), COMBINATIONS)
def test_every_guide_trains_saves_and_loads(guide, likelihood, prior, tmp_path):
    x = data_for(likelihood)[:64]
    vae = pyro_vae.VAE(
        6,
        2,
        hidden=(8,),
        likelihood=TABLE_SPECS.get(likelihood, likelihood),
        prior=prior,
        guide=GUIDES[guide],
    )
    history = pyro_vae.fit(vae, x, epochs=2, batch_size=32, progress=False, seed=0)
    assert all(math.isfinite(v) for v in history["train_loss"])
    vae.save(tmp_path / "m")
    loaded = pyro_vae.VAE.load(tmp_path / "m")
    assert loaded.variational.spec() == vae.variational.spec()
    assert loaded.config() == vae.config()
    first = pyro_vae.evaluate(vae, x[:16], num_samples=20, seed=3)
    again = pyro_vae.evaluate(loaded, x[:16], num_samples=20, seed=3)
    assert first["log_likelihood"] == again["log_likelihood"]
    assert math.isfinite(first["elbo"]) and first["log_likelihood"] >= first["elbo"] - 1e-3


def test_the_default_guide_leaves_config_and_weights_as_before():
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood="gaussian")
    assert "guide" not in vae.config()
    assert not any(name.startswith("variational") for name in vae.state_dict())
    assert pyro_vae.VAE.from_config(vae.config()).variational.name == "diagonal"


@pytest.mark.parametrize("guide", list(GUIDES))
def test_missing_cells_work_with_every_guide(guide):
    x = data_for("gaussian")[:64].clone()
    x[::3, 1] = float("nan")
    x[1::4, 4] = float("nan")
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood="gaussian", guide=GUIDES[guide], missing=True)
    pyro_vae.fit(vae, x, epochs=2, batch_size=32, progress=False, seed=0)
    assert vae.missing
    result = pyro_vae.evaluate(vae, x, num_samples=20)
    assert result["missing_rows"] > 0 and math.isfinite(result["log_likelihood"])
    filled = vae.impute(x, num_samples=50)
    assert not torch.isnan(filled).any()
    observed = ~torch.isnan(x)
    assert torch.equal(filled[observed], x[observed])


# --------------------------------------------------------------------------- semi-amortized refinement


def exact_posterior(vae, x):
    """The exact posterior N(mu(x), Sigma) of the fixed factor analysis model."""
    lin = vae.decoder.net[0]
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    psi = vae.likelihood.scale.detach().double() ** 2
    sigma = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + w.T @ (w / psi[:, None]))
    mu = (x.double() - b) @ (sigma @ w.T / psi).T
    return mu, sigma


def test_refinement_reaches_the_best_diagonal_gaussian_of_each_point():
    """From an untrained encoder, SVI on each point's (loc, scale) reaches the diagonal Gaussian
    closest to the exact posterior in KL(q || p): mean mu(x), variances 1 / Lambda_jj, at the
    KL 0.5 (sum log Lambda_jj - log det Lambda) for every point."""
    vae, x, precision = fixed_factor_analysis("diagonal")
    x = x[:64]
    mu, sigma = exact_posterior(vae, x)
    exact = dist.MultivariateNormal(mu, sigma)
    kl_min = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item()

    def kl(loc, scale):
        q = dist.MultivariateNormal(loc.double(), torch.diag_embed(scale.double() ** 2))
        return torch.distributions.kl_divergence(q, exact)

    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    store = dict(pyro.get_param_store().items())
    start = refine(vae, x, steps=0)
    loc0, scale0 = vae.encoder(x)
    torch.testing.assert_close(start.loc, loc0.detach())
    refined = refine(vae, x, steps=1000, lr=0.02, num_particles=16)
    assert kl(start.loc, start.scale).mean() > kl_min + 1.0  # the untrained encoder is far off
    gap = kl(refined.loc, refined.scale) - kl_min
    assert gap.mean() < 0.01 and gap.max() < 0.05, gap
    assert refined.elbo[-1] > refined.elbo[0]
    for name, p in vae.named_parameters():  # the model is left as it was
        assert torch.equal(p, before[name]), name
    assert dict(pyro.get_param_store().items()).keys() == store.keys()


@pytest.mark.parametrize("guide", ["diagonal", "lowrank", "flow"])
def test_evaluate_refined_reports_both_figures_on_the_same_points(guide):
    x = data_for("gaussian")
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood="gaussian", guide=guide)
    pyro_vae.fit(vae, x, epochs=3, batch_size=20, progress=False, seed=0)
    plain = pyro_vae.evaluate(vae, x, num_samples=50, seed=1)
    result = evaluate_refined(vae, x, steps=30, num_samples=50, seed=1)
    assert result["log_likelihood"] == plain["log_likelihood"]  # the amortized figure as evaluate gives it
    assert result["refine_steps"] == 30 and result["pointwise"]["log_likelihood_refined"].shape == (40,)
    assert result["elbo_refined"] > result["elbo"]  # SVI on each point's ELBO improves it
    assert result["elbo_gain"] == pytest.approx(result["elbo_refined"] - result["elbo"])
    assert math.isfinite(result["refined_minus_amortized_se"])


def test_refinement_refuses_bad_steps():
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood="gaussian")
    with pytest.raises(ConfigError, match="steps"):
        refine(vae, data_for("gaussian"), steps=-1)


# --------------------------------------------------------------------------- command line


def test_train_with_a_guide_saves_it_and_evaluate_reloads_it(tmp_path):
    from pyro_vae.app.cli import main

    out = tmp_path / "run"
    flags = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--eval-samples", "20", "--no-progress"]
    options = '{"layers": 1, "transform": "spline"}'
    assert main(["train", "--out", str(out), *flags, "--guide", "flow", "--guide-options", options]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["run"]["model"]["guide"] == "flow"
    assert saved["model"]["guide"]["options"]["transform"] == "spline"
    vae = pyro_vae.VAE.load(out)
    assert isinstance(vae.variational, guides.FlowGuide) and vae.variational.layers == 1
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    refined = tmp_path / "refined.json"
    assert main(["evaluate", str(out), "--no-progress", "--refine-steps", "5", "--output", str(refined)]) == 0
    metrics = json.loads(refined.read_text())
    assert metrics["refine_steps"] == 5 and math.isfinite(metrics["log_likelihood_refined"])
    assert main(["evaluate", str(out), "--refine-steps", "5", "--method", "ais"]) == 2
    lines: list[str] = []
    report = diagnose_run(
        out, num_samples=50, num_points=30, nuts_points=0, progress=False, echo=lines.append
    )
    assert report["guide"]["name"] == "flow" and len(report["psis"]["pointwise"]["khat"]) == 30
    assert ", guide flow: k-hat > 0.7 for " in lines[0]
    bad = ["--guide", "flow", "--guide-options", '{"layer": 1}']
    assert main(["train", "--out", str(tmp_path / "bad"), *flags, *bad]) == 2


def test_compare_guides_on_the_same_points(tmp_path):
    from pyro_vae.app.compare import compare_priors, default_config

    cfg = default_config().replace("model", hidden=[16]).replace("eval", num_samples=20)
    cfg = cfg.replace("train", epochs=2, patience=None, num_threads=1)
    out = tmp_path / "cmp"
    result = compare_priors(
        cfg, out_dir=out, guides=["diagonal", "lowrank"], progress=False, echo=lambda *a: None
    )
    assert not result.failed
    rows = result.rows
    assert [r["prior"] for r in rows] == ["diagonal", "lowrank"]  # the entry's label, in the first column
    assert min(r["diff_to_best"] for r in rows) < 0 and max(r["diff_to_best"] for r in rows) == 0
    assert all(r["diff_to_best_se"] is not None for r in rows)
    report = json.loads((out / "comparison.json").read_text())
    assert report["compared"] == "guide" and report["title"].startswith("Guide comparison")
    assert (out / "comparison.md").read_text().splitlines()[0].startswith("# Guide comparison")
    assert "| guide |" in (out / "comparison.md").read_text()
    run = RunConfig.from_json(out / "runs" / "lowrank")
    assert run.model.guide == "lowrank" and run.model.prior == cfg.model.prior
    with pytest.raises(ConfigError, match="either priors or guides"):
        compare_priors(cfg, ["laplace"], out_dir=tmp_path / "x", guides=["flow"])
    with pytest.raises(ConfigError, match="Did you mean 'flow'"):
        compare_priors(cfg, out_dir=tmp_path / "y", guides=["flows"])
