"""GPUs: train with fit(device="cuda"), evaluate, save, and load on a CPU-only machine.

The CUDA cases skip cleanly where torch sees no GPU; each check also runs on the CPU, so
the test's own logic is exercised everywhere.
"""

from __future__ import annotations

import pytest
import torch

import pyro_vae
from pyro_vae import VAE

CUDA = pytest.param(
    "cuda",
    marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
)
DEVICES = ["cpu", CUDA]


def images(n: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(n, 1, 28, 28, generator=g)


def on(vae: VAE) -> str:
    return next(vae.parameters()).device.type


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("network", "likelihood"), [("conv", "beta"), ("mlp", "gaussian_shared")])
def test_fit_evaluate_save_on_the_device_and_load_on_the_cpu(tmp_path, device, network, likelihood):
    x = images()
    vae = VAE(
        (1, 28, 28), 3, network=network, hidden=[32] if network == "mlp" else None, likelihood=likelihood
    )
    history = pyro_vae.fit(vae, x, x[:8], epochs=2, batch_size=16, device=device, progress=False)
    assert on(vae) == device and len(history) == 2
    result = pyro_vae.evaluate(vae, x[:8], num_samples=50, seed=1)  # data on the CPU: moved for it
    assert result["log_likelihood"] >= result["elbo"]
    vae.save(tmp_path)

    loaded = VAE.load(tmp_path, map_location="cpu")  # what a CPU-only machine does
    assert on(loaded) == "cpu"
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.cpu(), rtol=0, atol=0)
    z = torch.randn(5, 3)
    with torch.no_grad():  # the decoders agree up to the devices' float32 arithmetic
        torch.testing.assert_close(
            loaded.decode(z).mean, vae.decode(z.to(device)).mean.cpu(), rtol=1e-4, atol=1e-4
        )
    # the same draws (same device, same seed) give the same log p(x)
    again = pyro_vae.evaluate(loaded.to(device), x[:8], num_samples=50, seed=1)
    assert again["log_likelihood"] == pytest.approx(result["log_likelihood"], abs=1e-4)
    on_cpu = pyro_vae.evaluate(loaded.to("cpu"), x[:8], num_samples=50, seed=1)
    assert abs(on_cpu["log_likelihood"] - result["log_likelihood"]) < 5.0  # other draws on another device


@pytest.mark.parametrize("device", DEVICES)
def test_custom_modules_train_on_the_device(tmp_path, device):
    from tests.test_networks import ConvDecoder, ConvEncoder

    x = images(16)
    vae = VAE((1, 28, 28), 4, encoder=ConvEncoder(), decoder=ConvDecoder(), likelihood="laplace")
    pyro_vae.fit(vae, x, epochs=1, batch_size=8, device=device, progress=False)
    assert on(vae) == device
    vae.save(tmp_path)
    loaded = VAE.load(tmp_path, encoder=ConvEncoder(), decoder=ConvDecoder())
    assert on(loaded) == "cpu"
    assert torch.isfinite(torch.tensor(pyro_vae.evaluate(loaded, x, num_samples=10)["log_likelihood"]))
