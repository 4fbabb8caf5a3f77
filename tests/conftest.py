import os
from pathlib import Path

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The MNIST files of the developers' guide; tests that need them skip without them."""
    path = os.environ.get("PYRO_VAE_DATA")
    if not path or not (Path(path) / "binarized_mnist.npz").is_file():
        pytest.skip("set PYRO_VAE_DATA to the folder with binarized_mnist.npz and mnist.npz")
    return Path(path)


def binary_data(n: int = 200, d: int = 10, seed: int = 0) -> torch.Tensor:
    """Binary data with latent structure: two prototypes, each pixel flipped with prob. 0.1."""
    prototypes = (torch.arange(d) % 2).float(), (torch.arange(d) < d // 2).float()
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(2, (n,), generator=g)
    x = torch.where(which[:, None] == 0, prototypes[0], prototypes[1])
    flip = torch.rand(n, d, generator=g) < 0.1
    return torch.where(flip, 1 - x, x)
