"""The replayed training step (pyro_vae.infer.replayed_elbo) against Pyro's Trace_ELBO: values, gradients, fallbacks."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

import pyro_vae
from pyro_vae.infer.objectives import ELBOLoss, make_elbo
from pyro_vae.infer.replayed_elbo import ReplayedELBO, replayable
from tests.ddp_worker import TABLE_SPECS, data_for

RUNS = [(lik, "standard_normal", "diagonal") for lik in pyro_vae.distributions.likelihoods.names()]
RUNS += [
    ("gaussian", prior, "diagonal")
    for prior in pyro_vae.distributions.priors.names()
    if prior != "standard_normal"
]
# Every other guide (pyro_vae.distributions.guides), with a fixed and a learned prior.
RUNS += [
    (lik, prior, guide)
    for guide in pyro_vae.distributions.guides.names()
    if guide != "diagonal"
    for lik, prior in (("gaussian", "standard_normal"), ("bernoulli", "vamp"))
]


def build(likelihood: str, prior: str, **kwargs) -> pyro_vae.VAE:
    torch.manual_seed(0)
    spec = TABLE_SPECS.get(likelihood, likelihood)
    vae = pyro_vae.VAE(6, 2, hidden=(8,), likelihood=spec, prior=prior, **kwargs)
    vae.reset_parameters(0)
    vae.prior.initialize(data_for(likelihood)[:8])
    return vae


def loss_and_grads(vae, x, beta, *, replay: bool):
    objective = ELBOLoss(vae, make_elbo("elbo", 1), replay=replay)
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    loss = objective(x, beta)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}
    vae.zero_grad(set_to_none=True)
    return loss.detach(), grads, objective


@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize(("likelihood", "prior", "guide"), RUNS)
def test_replayed_step_equals_trace_elbo(likelihood, prior, guide, beta):
    vae = build(likelihood, prior, guide=guide)
    x = data_for(likelihood)[:16]
    expected, expected_grads, _ = loss_and_grads(vae, x, beta, replay=False)
    got, grads, objective = loss_and_grads(vae, x, beta, replay=True)
    assert objective.replayed is not None and all(objective.replayed.verdicts.values())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert grads.keys() == expected_grads.keys()  # the same parameters get gradients (beta 0: no prior)
    for name, g in expected_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("guide", pyro_vae.distributions.guides.names())
def test_replayed_step_with_missing_cells_equals_trace_elbo(guide):
    vae = build("gaussian", "standard_normal", missing=True, guide=guide)
    x = data_for("gaussian")[:16].clone()
    x[::3, 1] = float("nan")
    expected, expected_grads, _ = loss_and_grads(vae, x, 1.0, replay=False)
    got, grads, objective = loss_and_grads(vae, x, 1.0, replay=True)
    assert all(objective.replayed.verdicts.values())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for name, g in expected_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5)


def test_the_check_leaves_random_streams_and_buffers_as_they_were():
    vae = build("gaussian_optimal", "standard_normal")  # keeps a running variance (a buffer)
    x = data_for("gaussian_optimal")[:16]
    buffers = {n: b.clone() for n, b in vae.named_buffers()}
    state = torch.get_rng_state()
    assert ReplayedELBO(vae).check(x, 1.0)
    assert torch.equal(torch.get_rng_state(), state)
    for name, b in vae.named_buffers():
        assert torch.equal(b, buffers[name]), name


def test_a_model_with_another_site_falls_back_to_pyro():
    class Extra(pyro_vae.VAE):
        pass

    vae = build("gaussian", "standard_normal")
    original = vae.prior.forward

    def prior_with_site():
        pyro.sample("extra", pyro.distributions.Normal(0.0, 1.0))  # a structure the replay does not know
        return original()

    x = data_for("gaussian")[:16]
    replayed = ReplayedELBO(vae)
    assert replayed(x, 1.0) is not None
    vae.prior.forward = prior_with_site  # the structure changes: a new prior object is a new key
    key = replayed.structure(x, 1.0)
    replayed.verdicts.pop(key)  # same objects: forget the verdict as a new structure would
    assert replayed(x, 1.0) is None
    assert replayed.verdicts[key] is False
    # a subclass that overrides the model is never replayed
    Extra.model = lambda self, x, beta=1.0: None
    assert "overrides model" in replayable(Extra(6, 2, hidden=(8,), likelihood="gaussian"), make_elbo())


def test_a_new_shape_or_mode_is_checked_again_and_a_handler_goes_to_pyro():
    vae = build("gaussian", "standard_normal")
    x = data_for("gaussian")
    replayed = ReplayedELBO(vae)
    assert replayed(x[:16], 1.0) is not None
    assert replayed(x[:5], 0.5) is not None
    vae.eval()
    assert replayed(x[:5], 0.5) is not None
    assert len(replayed.verdicts) == 3  # batch size is not structure; beta's kind and the mode are
    with poutine.condition(data={"z": torch.zeros(16, 2)}):
        assert replayed(x[:16], 1.0) is None


@pytest.mark.parametrize(("loss", "particles"), [("elbo", 2), ("elbo_analytic", 1), ("iwae", 4)])
def test_other_objectives_use_pyro(loss, particles):
    vae = build("gaussian", "standard_normal")
    assert ELBOLoss(vae, make_elbo(loss, particles)).replayed is None


def test_fit_replays_and_matches_pyro_to_the_step():
    """Two epochs of fit with and without the replay end at the same weights."""
    x = data_for("bernoulli")
    weights = []
    for replay in (True, False):
        vae = build("bernoulli", "standard_normal")
        original = ELBOLoss.__init__

        def init(self, vae, elbo, *, replay=replay, _original=original):
            _original(self, vae, elbo, replay=replay)

        ELBOLoss.__init__ = init
        try:
            pyro_vae.fit(vae, x, epochs=2, batch_size=8, progress=False)
        finally:
            ELBOLoss.__init__ = original
        weights.append(torch.cat([p.detach().flatten() for p in vae.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("likelihood", "prior", "guide"), RUNS)
def test_importance_weights_equal_pyros_traced_ones(likelihood, prior, guide):
    """The seam's weights come from the VAE's distributions, not a trace per chunk: same draws, same values."""
    vae = build(likelihood, prior, missing=likelihood == "gaussian", guide=guide).eval()
    x = data_for(likelihood)[:8].clone()
    if vae.missing:
        x[::3, 2] = float("nan")
    with torch.no_grad():
        torch.manual_seed(3)
        got = vae.log_weights(x, 5)
        torch.manual_seed(3)
        want = vae._traced_log_weights(x, 5)
    for name, g, w in zip(["log p(x|z)", "log p(z)", "log q", "z"], got, want):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, msg=name)
    if guide == "diagonal":  # only a diagonal Gaussian is cut back from the plate of draws to one draw's
        torch.testing.assert_close(got.posterior.mean, want.posterior.mean)
        torch.testing.assert_close(got.posterior.stddev, want.posterior.stddev)
