"""Bring your own networks: the encoder/decoder contract, images as images, built-in conv and gated."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pyro_vae
from pyro_vae import VAE
from pyro_vae.app.cli import main
from pyro_vae.distributions import likelihoods
from pyro_vae.errors import CheckpointError, ConfigError, DataError

SHAPE = (1, 28, 28)
LATENT = 4


class ConvEncoder(nn.Module):
    """A user's encoder returning the pair (loc, scale)."""

    def __init__(self, latent_dim: int = LATENT, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.loc = nn.Linear(2 * width * 49, latent_dim)
        self.raw_scale = nn.Linear(2 * width * 49, latent_dim)

    def forward(self, x):
        h = self.features(x)
        return self.loc(h), F.softplus(self.raw_scale(h)) + 1e-3


class ConvDecoder(nn.Module):
    """A user's decoder: (B, latent) -> (B, num_params, 1, 28, 28); refuses extra dimensions."""

    def __init__(self, latent_dim: int = LATENT, num_params: int = 2, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent_dim, 2 * width * 49)
        self.deconv = nn.Sequential(
            nn.ReLU(),
            nn.Unflatten(1, (2 * width, 7, 7)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, num_params, 4, 2, 1),
        )

    def forward(self, z):
        assert z.dim() == 2, "the library flattens sample dimensions before the decoder"
        return self.deconv(self.fc(z)).unsqueeze(2)


def grey_images(n: int = 24, seed: int = 0) -> torch.Tensor:
    """Grey levels in (0, 1) with structure: bright squares at one of two places."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 + 0.05 * torch.rand(n, *SHAPE, generator=g)
    which = torch.randint(2, (n,), generator=g)
    for i, w in enumerate(which.tolist()):
        x[i, 0, 4 + 12 * w : 12 + 12 * w, 6:20] += 0.7
    return x


def test_custom_conv_networks_train_evaluate_save_and_load_with_the_modules(tmp_path):
    x = grey_images()
    torch.manual_seed(0)
    num_params = likelihoods.create("laplace").num_params  # known before the VAE exists
    vae = VAE(
        SHAPE, LATENT, encoder=ConvEncoder(), decoder=ConvDecoder(num_params=num_params), likelihood="laplace"
    )
    assert vae.input_shape == SHAPE and vae.input_dim == 784 and vae.network == "custom"
    history = pyro_vae.fit(vae, x, epochs=2, batch_size=8, lr=3e-3, progress=False)
    assert len(history) == 2 and history["train_loss"][-1] < history["train_loss"][0]
    result = pyro_vae.evaluate(vae, x[:8], num_samples=50, seed=1)
    assert result["log_likelihood"] >= result["elbo"]
    assert 0 < result["bits_per_dim"] < 16
    # the flat view of the same images is the same data
    flat = pyro_vae.evaluate(vae, x[:8].flatten(1), num_samples=50, seed=1)
    assert flat["log_likelihood"] == pytest.approx(result["log_likelihood"], abs=1e-5)
    assert vae.sample(3).shape == (3, *SHAPE) and vae.reconstruct(x[:2]).shape == (2, *SHAPE)
    d = vae.decode(torch.randn(3, 5, LATENT))  # sample dimensions in front of the batch
    assert d.batch_shape == (3, 5) and d.event_shape == SHAPE

    assert {k.split(".")[0] for k in vae.state_dict()} == {"encoder", "decoder"}  # each weight once
    vae.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())["model"]
    assert config["network"] == "custom" and config["input_shape"] == list(SHAPE)
    loaded = VAE.load(tmp_path, encoder=ConvEncoder(), decoder=ConvDecoder())
    again = pyro_vae.evaluate(loaded, x[:8], num_samples=50, seed=1)
    assert again["log_likelihood"] == pytest.approx(result["log_likelihood"], abs=1e-5)

    with pytest.raises(ConfigError, match=r"config\.json.*own encoder and decoder.*encoder=\.\.\., decoder="):
        VAE.load(tmp_path)
    with pytest.raises(CheckpointError, match="do not fit the weights saved in"):
        VAE.load(tmp_path, encoder=ConvEncoder(width=4), decoder=ConvDecoder(width=4))


def test_an_encoder_returning_one_tensor_gets_the_positive_map_and_floor():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 2 * LATENT))
    with torch.no_grad():
        enc[1].bias[LATENT:] = -1e4
    vae = VAE(
        SHAPE, LATENT, encoder=enc, decoder=ConvDecoder(num_params=1), likelihood="continuous_bernoulli"
    )
    loc, scale = vae.encode(grey_images(3))
    assert loc.shape == scale.shape == (3, LATENT)
    assert (scale >= vae.encoder_min_scale).all()


def test_wrong_output_shapes_are_refused_at_construction_with_the_expected_shape():
    with pytest.raises(
        ConfigError, match=r"decoder ConvDecoder .* to \(2, 1, 1, 28, 28\); expected \(2, 2, 1, 28, 28\)"
    ):
        VAE(SHAPE, LATENT, encoder=ConvEncoder(), decoder=ConvDecoder(num_params=1), likelihood="gaussian")
    bad_encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, LATENT))
    with pytest.raises(ConfigError, match=r"encoder Sequential .* to \(2, 4\); expected \(2, 8\)"):
        VAE(SHAPE, LATENT, encoder=bad_encoder, decoder=ConvDecoder(), likelihood="gaussian")
    with pytest.raises(ConfigError, match=r"decoder Linear fails on a batch of shape \(2, 4\)"):
        VAE(SHAPE, LATENT, encoder=ConvEncoder(), decoder=nn.Linear(3, 5), likelihood="gaussian")
    with pytest.raises(ConfigError, match="needs a named likelihood"):
        VAE(SHAPE, LATENT, encoder=ConvEncoder(), decoder=ConvDecoder())
    with pytest.raises(ConfigError, match="both encoder= and decoder="):
        VAE(SHAPE, LATENT, encoder=ConvEncoder(), likelihood="gaussian")
    with pytest.raises(ConfigError, match=r"unknown network 'resnet'"):
        VAE(SHAPE, LATENT, network="resnet", likelihood="gaussian")


def test_data_must_have_the_input_shape_or_its_flat_form():
    vae = VAE(SHAPE, LATENT, network="conv", likelihood="continuous_bernoulli")
    for ok in (torch.rand(2, 1, 28, 28), torch.rand(2, 28, 28), torch.rand(2, 784)):
        vae.check_data(ok)
    with pytest.raises(DataError, match=r"expected data of shape \(n, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        vae.check_data(torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize(
    ("network", "shape", "hidden"),
    [
        ("conv", (1, 28, 28), None),
        ("conv", (3, 32, 32), [16]),
        ("gated", (1, 28, 28), [16, 16]),
        ("gated", 64, None),
    ],
)
def test_built_in_networks_round_trip_through_config_json(tmp_path, network, shape, hidden):
    torch.manual_seed(0)
    vae = VAE(shape, 3, network=network, hidden=hidden, likelihood="continuous_bernoulli", prior="vamp")
    dims = (shape,) if isinstance(shape, int) else shape
    x = torch.rand(12, *dims)
    pyro_vae.fit(vae, x, epochs=1, batch_size=6, progress=False)
    before = pyro_vae.evaluate(vae, x, num_samples=20, seed=3)
    vae.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())["model"]
    assert config["network"] == network
    expected_hidden = (
        hidden if hidden is not None else list(pyro_vae.nn.networks.NETWORKS[network].default_hidden)
    )
    assert config["hidden"] == expected_hidden
    loaded = VAE.load(tmp_path)
    assert loaded.network == network and loaded.input_shape == vae.input_shape
    after = pyro_vae.evaluate(loaded, x, num_samples=20, seed=3)
    assert after["log_likelihood"] == pytest.approx(before["log_likelihood"], abs=1e-5)
    with pytest.raises(ConfigError, match="built-in network"):
        VAE.load(tmp_path, encoder=ConvEncoder(), decoder=ConvDecoder())


def test_gated_layers_are_tomczak_and_wellings():
    vae = VAE(784, 40, network="gated", likelihood="bernoulli")
    assert vae.hidden == (300, 300)
    layer = vae.encoder.net[0]
    assert isinstance(layer, pyro_vae.nn.networks.GatedDense)
    h = torch.randn(5, 784)
    torch.testing.assert_close(layer(h), layer.h(h) * torch.sigmoid(layer.g(h)))


def test_conv_refuses_shapes_it_does_not_support():
    for shape in (784, (1, 8, 8), (2, 28, 28), (1, 28, 32)):
        with pytest.raises(ConfigError, match=r"network 'conv' supports images of shape .* \(28, 32\)"):
            VAE(shape, 2, network="conv", likelihood="bernoulli")


def test_per_feature_parameters_take_the_image_shape():
    for name, attr in (("gaussian_shared", "raw_scale"), ("student_t", "raw_df")):
        vae = VAE(SHAPE, 2, network="conv", likelihood=name)
        assert getattr(vae.likelihood, attr).shape == SHAPE
        assert vae.likelihood.param_dim == -4


def test_cli_network_flag_builds_and_records_the_network(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--eval-samples", "5", "--no-progress"]
    assert main(["train", "--out", str(out), "--network", "gated", *args]) == 0
    assert "network gated" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["model"]["network"] == "gated" and config["model"]["network"] == "gated"
    assert VAE.load(out).network == "gated"
    assert main(["train", "--out", str(tmp_path / "conv"), "--network", "conv", *args]) != 0
    assert "network 'conv' supports images" in capsys.readouterr().err


def test_diagnostics_and_figures_take_images(tmp_path):
    from pyro_vae.app import plotting
    from pyro_vae.diagnostics import psis_diagnostic, to_inference_data

    x = grey_images(6)
    vae = VAE(SHAPE, 2, network="conv", likelihood="beta")
    pyro_vae.fit(vae, x, epochs=1, batch_size=6, progress=False)
    idata = to_inference_data(vae, x, num_samples=10, num_predictive=2)
    assert idata.observed_data["x"].shape == (6, 784) and idata.posterior_predictive["x"].shape == (
        1,
        2,
        6,
        784,
    )
    assert idata.attrs["input_shape"] == "(1, 28, 28)" and idata.attrs["network"] == "conv"
    assert psis_diagnostic(vae, x, 10).khat.shape == (6,)
    fig = plotting.plot_reconstructions(x[:4], vae.reconstruct(x[:4]), (28, 28))
    fig.savefig(tmp_path / "rec.png")
    plotting.plot_samples(vae.sample(4, mean=True), SHAPE).savefig(tmp_path / "samples.png")


def test_evaluation_chunks_are_sized_by_the_decoders_widest_layer():
    from pyro_vae.infer.evaluation import CHUNK_ELEMENTS, default_chunk_size

    conv = VAE(SHAPE, 4, network="conv", likelihood="beta")
    assert conv.decoder.widest == 32 * 14 * 14  # the first transposed convolution's feature maps
    assert default_chunk_size(conv) == CHUNK_ELEMENTS // (32 * 14 * 14)
    mlp = VAE(784, 4, hidden=(300, 300), likelihood="beta")
    assert mlp.decoder.widest == 2 * 784 and default_chunk_size(mlp) == CHUNK_ELEMENTS // (2 * 784)


@pytest.mark.parametrize("network", ["conv", "mlp"])
def test_cli_trains_on_an_array_of_images_as_images(tmp_path, capsys, network):
    import numpy as np

    path = tmp_path / "images.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 4, size=(40, 28, 28)).astype(np.float64))
    out = tmp_path / network
    args = ["--dataset", "npy", "--data-path", str(path), "--dequantize", "--network", network]
    args += ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--eval-samples", "5", "--no-progress"]
    assert main(["train", "--out", str(out), *args]) == 0, capsys.readouterr().err
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["input_shape"] == [1, 28, 28] and model["network"] == network
    assert (out / "reconstructions.png").stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["bits_per_dim"] > 0


def test_image_datasets_and_loaders_are_taken_as_they_are():
    from torch.utils.data import DataLoader, TensorDataset

    x = grey_images(16)
    dataset = TensorDataset(x, torch.arange(16))  # (image, label) items, images (1, 28, 28)
    vae = VAE(SHAPE, 2, network="conv", likelihood="beta")
    pyro_vae.fit(
        vae, dataset, DataLoader(TensorDataset(x[:4]), batch_size=2), epochs=1, batch_size=8, progress=False
    )
    from_loader = pyro_vae.evaluate(vae, DataLoader(dataset, batch_size=16), num_samples=5, seed=2)
    from_tensor = pyro_vae.evaluate(vae, x, num_samples=5, seed=2)
    assert from_loader["log_likelihood"] == pytest.approx(from_tensor["log_likelihood"], abs=1e-4)


def test_the_hidden_setting_defaults_to_the_networks_widths():
    from pyro_vae.app.config import ModelConfig

    assert ModelConfig().widths() == [256, 256] and ModelConfig(network="gated").widths() == [300, 300]
    assert (
        ModelConfig(network="conv").widths() == [] and ModelConfig(network="gated", hidden=[]).widths() == []
    )
    with pytest.raises(ConfigError, match="model.network must be one of conv, gated, mlp"):
        ModelConfig(network="resnet")
