"""The VAE module: Pyro sites, user-facing maps, persistence and input validation."""

import argparse
import json

import pyro
import pytest
import torch
from pyro import poutine

import pyro_vae
from pyro_vae import VAE, description
from pyro_vae.distributions import likelihoods
from pyro_vae.errors import CheckpointError, ConfigError
from pyro_vae.nn import networks
from tests.conftest import binary_data


def test_model_and_guide_sites_and_shapes():
    vae = VAE(10, 3, hidden=(16,), likelihood="bernoulli")
    x = binary_data(7)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    z_q, z_p, x_site = guide_trace.nodes["z"], model_trace.nodes["z"], model_trace.nodes["x"]
    assert z_q["fn"].event_shape == (3,) and z_q["fn"].batch_shape == (7,)
    assert z_p["fn"].event_shape == (3,) and z_p["fn"].batch_shape == (7,)
    assert x_site["is_observed"] and x_site["fn"].event_shape == (10,)
    assert torch.equal(z_p["value"], z_q["value"])
    plates = {f.name for f in x_site["cond_indep_stack"]}
    assert plates == {"data"}


def test_encode_decode_sample_reconstruct_shapes():
    vae = VAE(10, 3, hidden=(16, 16), likelihood="gaussian")
    x = torch.randn(5, 10)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (5, 3) and (scale > 0).all()
    d = vae.decode(torch.randn(4, 5, 3))
    assert d.batch_shape == (4, 5) and d.event_shape == (10,)
    assert vae.sample(6).shape == (6, 10)
    assert vae.sample(6, mean=True).shape == (6, 10)
    rec = vae.reconstruct(x)
    assert rec.shape == (5, 10)
    torch.testing.assert_close(rec, vae.decode(loc).base_dist.loc)


def test_linear_vae_is_affine():
    vae = VAE(6, 2, hidden=(), likelihood="gaussian_shared")
    assert len(vae.encoder.net) == 1 and len(vae.decoder.net) == 1
    z = torch.randn(3, 2)
    mean = vae.decode(z).base_dist.loc
    lin = vae.decoder.net[0]
    torch.testing.assert_close(mean, z @ lin.weight.T + lin.bias)


def test_encoder_scale_stays_positive_for_extreme_inputs():
    vae = VAE(4, 2, hidden=(8,), likelihood="gaussian")
    _, scale = vae.encode(torch.full((3, 4), -1e6))
    assert (scale >= vae.encoder_min_scale).all() and torch.isfinite(scale).all()


def test_save_load_round_trip(tmp_path):
    vae = VAE(
        10,
        3,
        hidden=(16,),
        likelihood="gaussian_shared",
        prior={"name": "mixture", "options": {"num_components": 4}},
    )
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    vae.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["prior"] == {
        "name": "mixture",
        "options": {"num_components": 4, "init_spread": 1.0},
    }
    loaded = VAE.load(tmp_path)
    assert loaded.config() == vae.config()
    for (k1, v1), (k2, v2) in zip(vae.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(5, 10)
    torch.testing.assert_close(loaded.reconstruct(x), vae.reconstruct(x))
    pyro.set_rng_seed(1)
    a = vae.prior().log_prob(torch.ones(3))
    torch.testing.assert_close(loaded.prior().log_prob(torch.ones(3)), a)


def test_save_keeps_other_sections_and_load_refuses_pickles(tmp_path):
    vae = VAE(4, 2, hidden=(), likelihood="gaussian")
    vae.save(tmp_path, extra={"run": {"note": 1}})
    vae.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["run"] == {"note": 1}

    # Arbitrary pickled objects are refused by weights_only loading.
    torch.save({"not": argparse.Namespace(a=1)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="Python objects other than tensors.*argparse.Namespace"):
        VAE.load(tmp_path)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        VAE.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="model"):
        VAE.load(tmp_path)


def test_auto_likelihood_resolves_from_data_and_requires_data_first():
    vae = VAE(10, 2, hidden=(8,))
    with pytest.raises(RuntimeError, match="has not seen data"):
        vae.decode(torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="has not seen data"):
        vae.save("/nonexistent-never-written")
    assert list(vae.parameters()) == []  # nothing is built before the data decide
    (note,) = description.complete(vae, binary_data(), has_missing=False)
    assert "'bernoulli'" in note and "binary" in note
    assert isinstance(vae.likelihood, likelihoods.Bernoulli)
    assert not vae.missing and vae.input_scale is None
    vae2 = VAE(3, 2, hidden=(8,))
    description.complete(vae2, torch.tensor([[0.5, -1.0, 2.0]]), has_missing=False)
    assert vae2.likelihood.name == "gaussian"
    # a built VAE stays as it is, whatever the data
    assert description.complete(vae2, torch.zeros(1, 3), has_missing=True) == []
    assert vae2.likelihood.name == "gaussian" and not vae2.missing
    with pytest.raises(RuntimeError, match="built already"):
        vae2.complete("bernoulli", missing=False, input_scale=None)


def test_an_auto_vae_is_built_once_from_its_data(monkeypatch):
    """likelihood='auto' builds every module once, when fit sees the data: the encoder is made
    for the mask the data call for, never rebuilt."""
    x = binary_data().clone()
    x[0, 0] = float("nan")
    vae = VAE(x.shape[1], 2, hidden=(8,))
    built = []
    original = VAE._set_encoder
    monkeypatch.setattr(VAE, "_set_encoder", lambda self, net: (built.append(1), original(self, net))[1])
    pyro_vae.fit(vae, x, epochs=1, batch_size=32)
    assert built == [1] and vae.missing
    assert isinstance(vae.encoder.net, networks.MaskedInput)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_dim=0, latent_dim=2), "input_dim"),
        (dict(input_dim=3, latent_dim=-1), "latent_dim"),
        (dict(input_dim=3, latent_dim=2, hidden=(0,)), "hidden"),
        (dict(input_dim=3, latent_dim=2, activation="sigmoidish"), "activation"),
        (dict(input_dim=3, latent_dim=2, likelihood="gausian"), "gaussian"),
        (dict(input_dim=3, latent_dim=2, prior="vampprior"), "vamp"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(**kwargs)


def test_check_data_messages():
    vae = VAE(4, 2, hidden=(8,), likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        vae.check_data(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        vae.check_data(torch.tensor([[0.0, 1.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="continuous_bernoulli"):
        vae.check_data(torch.full((2, 4), 0.5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        vae.check_data([[0, 1, 0, 1]])
    with pytest.raises(ValueError, match="last dimension 2"):
        vae.decode(torch.zeros(3, 5))


def test_a_named_likelihood_is_built_as_described_and_says_how_to_take_missing_cells():
    x = binary_data().clone()
    x[0, 0] = float("nan")
    vae = VAE(x.shape[1], 2, hidden=(8,), likelihood="bernoulli")
    encoder = vae.encoder
    with pytest.raises(pyro_vae.errors.DataError, match=r"missing=True"):
        pyro_vae.fit(vae, x, epochs=1, batch_size=32)
    assert vae.encoder is encoder and not vae.missing  # nothing rebuilt
