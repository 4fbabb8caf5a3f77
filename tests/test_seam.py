r"""The one log-density seam (:meth:`VAE.log_weights`, :meth:`VAE.log_joint`) against Pyro, and
the paths that used to carry their own copy of it: AIS on flat images and on missing cells,
and the VampPrior on missing cells."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_vae
from pyro_vae.infer.ais import ais
from tests.ddp_worker import TABLE_SPECS, data_for
from tests.test_factor_analysis import D, L, fa_parameters

LIKELIHOODS = pyro_vae.distributions.likelihoods.names()
PRIORS = [p for p in pyro_vae.distributions.priors.names() if p != "standard_normal"]
IMAGE_NETWORKS = {"conv": (1, 28, 28)}  # the networks built for images; the others take vectors


def _vae(likelihood="gaussian", prior="standard_normal", network="mlp", missing=False) -> pyro_vae.VAE:
    torch.manual_seed(0)
    shape = IMAGE_NETWORKS.get(network, 6)
    spec = TABLE_SPECS.get(likelihood, likelihood)
    vae = pyro_vae.VAE(shape, 2, hidden=None if network != "mlp" else (8,), likelihood=spec, prior=prior,
                       network=network, missing=missing)  # fmt: skip
    vae.reset_parameters(0)
    return vae


def _data(vae: pyro_vae.VAE, likelihood: str, missing: bool) -> torch.Tensor:
    if len(vae.input_shape) > 1:
        x = torch.bernoulli(torch.full((4, vae.input_dim), 0.3))
    else:
        x = data_for(likelihood)[:8].clone()
    if missing:
        x[::3, 2] = float("nan")
        x[1, 4] = float("nan")
    return x


def _seam_and_pyro(vae: pyro_vae.VAE, x: torch.Tensor, beta: float):
    """The seam's negative ELBO and Pyro's ``Trace_ELBO`` loss at the same draws, with their gradients."""
    out = []
    for loss_of in (
        lambda: -vae.log_weights(x).elbo(beta).sum(),
        lambda: pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta),
    ):
        vae.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        loss = loss_of()
        loss.backward()
        out.append(
            (loss.detach(), {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None})
        )
    return out


def _assert_same(got, want):
    (loss, grads), (loss_pyro, grads_pyro) = got, want
    torch.testing.assert_close(loss, loss_pyro, rtol=1e-5, atol=1e-4)
    assert grads.keys() == grads_pyro.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_pyro[name], rtol=1e-4, atol=1e-5, msg=name)


CASES = [(lik, "standard_normal", "mlp") for lik in LIKELIHOODS]
CASES += [("gaussian", prior, "mlp") for prior in PRIORS]
CASES += [
    ("bernoulli", "standard_normal", net) for net in sorted(pyro_vae.nn.networks.NETWORKS) if net != "mlp"
]
CASES += [("bernoulli", "vamp", "conv")]


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
@pytest.mark.parametrize(("likelihood", "prior", "network"), CASES)
def test_the_seam_equals_trace_elbo_in_value_and_gradients(likelihood, prior, network, beta, missing):
    if missing and network in IMAGE_NETWORKS:
        pytest.skip("missing cells are for vectors: an image VAE refuses them (tested below)")
    vae = _vae(likelihood, prior, network, missing)
    x = _data(vae, likelihood, missing)
    vae.prior.initialize(torch.nan_to_num(x, nan=0.5) if len(vae.input_shape) == 1 else x)
    _assert_same(*_seam_and_pyro(vae, x, beta))


def test_log_joint_is_the_models_log_density_at_given_codes():
    """log p(x|z) + log p(z) from the seam equals the model's trace conditioned on z."""
    vae = _vae("gaussian", "mixture", missing=True)
    x = _data(vae, "gaussian", True)
    z = torch.randn(3, x.shape[0], vae.latent_dim)
    log_px_z, log_pz = vae.log_joint(z, x)
    for k in range(3):
        conditioned = pyro.poutine.condition(vae.model, data={"z": z[k]})
        trace = pyro.poutine.trace(conditioned).get_trace(x)
        trace.compute_log_prob()
        torch.testing.assert_close(log_px_z[k], trace.nodes["x"]["log_prob"])
        torch.testing.assert_close(log_pz[k], trace.nodes["z"]["log_prob"])


def test_the_seam_refuses_bad_codes_and_draw_counts_clearly():
    vae = _vae("gaussian")
    x = _data(vae, "gaussian", False)
    with pytest.raises(pyro_vae.errors.DataError, match=r"\(\.\.\., 8, 2\)"):
        vae.log_joint(torch.zeros(8, 3), x)
    with pytest.raises(pyro_vae.errors.DataError, match="8 data points"):
        vae.log_joint(torch.zeros(5, 2), x)
    with pytest.raises(pyro_vae.errors.ConfigError, match="num_samples"):
        vae.log_weights(x, 0)


def test_flat_and_shaped_images_give_the_same_weights():
    vae = _vae("bernoulli", network="conv")
    x = _data(vae, "bernoulli", False)
    with torch.no_grad():
        torch.manual_seed(2)
        flat = vae.log_weights(x, 3)
        torch.manual_seed(2)
        shaped = vae.log_weights(x.reshape(-1, 1, 28, 28), 3)
    torch.testing.assert_close(flat.log_w, shaped.log_w)


def test_ais_on_a_conv_model_takes_flat_images():
    """AIS used to send flat images to conv2d ("Expected 3D (unbatched) or 4D (batched) input")."""
    vae = _vae("bernoulli", network="conv")
    x = _data(vae, "bernoulli", False)
    flat = ais(vae, x, num_steps=5, num_chains=2, num_leapfrog=1)
    shaped = ais(vae, x.reshape(-1, 1, 28, 28), num_steps=5, num_chains=2, num_leapfrog=1)
    assert torch.isfinite(flat.log_px).all()
    torch.testing.assert_close(flat.log_px, shaped.log_px)
    ev = pyro_vae.evaluate(vae, x, 10, method="ais", ais_steps=5, ais_chains=2)
    assert ev["num_points"] == x.shape[0]


def _linear_vae_with_missing_cells(seed: int) -> pyro_vae.VAE:
    torch.manual_seed(seed)
    return pyro_vae.VAE(D, L, hidden=(), likelihood="gaussian_shared", prior="standard_normal", missing=True)


def _exact_observed_marginal(vae: pyro_vae.VAE, x: torch.Tensor) -> torch.Tensor:
    """Factor analysis: log N(x_o; b_o, (W W^T + Psi)_oo), the exact marginal of each row's observed cells."""
    w, b, psi = fa_parameters(vae)
    cov = w @ w.T + torch.diag(psi)
    out = []
    for row in x.double():
        o = ~torch.isnan(row)
        out.append(dist.MultivariateNormal(b[o], cov[o][:, o]).log_prob(row[o]))
    return torch.stack(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_ais_with_missing_cells_matches_the_exact_marginal_of_the_observed_cells(seed):
    vae = _linear_vae_with_missing_cells(seed)
    x = vae.sample(12)
    x[::2, 0] = float("nan")
    x[1::3, 3:5] = float("nan")
    result = ais(vae, x, num_steps=500, num_chains=256, num_leapfrog=2, initial="prior")
    err = result.log_px - _exact_observed_marginal(vae, x)
    assert err.abs().max() < 0.05, err
    assert abs(err.mean()) < 0.015, err.mean()


def test_an_image_vae_refuses_missing_cells_clearly():
    with pytest.raises(pyro_vae.errors.ConfigError, match="takes images"):
        pyro_vae.VAE((1, 28, 28), 2, network="conv", likelihood="bernoulli", missing=True)


def test_the_vamp_prior_trains_on_a_table_with_missing_cells():
    """Its pseudo-inputs were copied from training rows with their NaN: the weights were non-finite at once."""
    torch.manual_seed(0)
    x = torch.randn(120, 5)
    x[::4, 1] = float("nan")
    vae = pyro_vae.VAE(5, 2, hidden=(16,), likelihood="gaussian", prior="vamp", missing=True)
    pyro_vae.fit(vae, x, epochs=3, batch_size=32, progress=False)
    assert torch.isfinite(vae.prior.pseudo_inputs).all()
    assert torch.isfinite(torch.tensor(pyro_vae.evaluate(vae, x, 50)["log_likelihood"]))


@pytest.fixture
def table_with_missing_cells(tmp_path):
    """A CSV table of 5 correlated real columns, 15% of its cells empty."""
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(240, 2, generator=rng) @ torch.randn(2, 5, generator=rng) + 0.3 * torch.randn(
        240, 5, generator=rng
    )
    x[torch.rand(x.shape, generator=rng) < 0.15] = float("nan")
    path = tmp_path / "table.csv"
    rows = [",".join("" if v != v else f"{v:.5f}" for v in row.tolist()) for row in x]
    path.write_text("a,b,c,d,e\n" + "\n".join(rows) + "\n")
    return path


FAST = ["--epochs", "3", "--hidden", "16", "--eval-samples", "20", "--num-threads", "1", "--no-progress"]


def test_compare_diagnose_and_ais_run_on_a_table_with_missing_cells(table_with_missing_cells, tmp_path):
    """compare used to say "build it with VAE(..., missing=True)"; AIS failed on the missing cells."""
    from pyro_vae.app.cli import main

    data = ["--dataset", "csv", "--data-path", str(table_with_missing_cells)]
    assert (
        main(["compare", "--out", str(tmp_path / "cmp"), "--priors", "standard_normal,vamp", *data, *FAST])
        == 0
    )
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *data, *FAST]) == 0
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--method",
                "ais",
                "--ais-steps",
                "10",
                "--ais-chains",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    diagnose = [
        "diagnose",
        str(run),
        "--out",
        str(tmp_path / "diag"),
        "--num-points",
        "10",
        "--nuts-points",
        "1",
    ]
    assert (
        main([*diagnose, "--nuts-warmup", "10", "--nuts-draws", "10", "--is-samples", "50", "--no-progress"])
        == 0
    )
