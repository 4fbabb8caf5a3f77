"""The neural networks: an MLP, the Gaussian encoder and the decoder.

They are plain ``torch.nn`` modules; the probabilistic meaning lives in
:mod:`pyro_vae.model`, which turns their outputs into distributions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """Linear layers with ``activation`` between them; ``hidden=()`` is a single linear map."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    r"""Amortized diagonal Gaussian :math:`q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma(x)^2)`.

    The scale is :math:`\operatorname{softplus}(h) + \sigma_{\min}`: smooth, strictly
    positive, and linear (not exponential) for large pre-activations, so one bad batch
    cannot overflow it.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.net = mlp(input_dim, hidden, 2 * latent_dim, activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale


class Decoder(nn.Module):
    """Maps ``z`` to the likelihood's unconstrained parameters, ``(..., num_params, input_dim)``."""

    def __init__(
        self,
        latent_dim: int,
        input_dim: int,
        hidden: Sequence[int],
        num_params: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.num_params = num_params
        self.net = mlp(latent_dim, hidden, num_params * input_dim, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        return out.unflatten(-1, (self.num_params, self.input_dim))
