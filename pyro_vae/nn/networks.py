r"""The neural networks: built-in encoder/decoder pairs by name, and the wrappers that give
any pair of ``nn.Module`` s the library's contract.

The contract (``VAE(..., encoder=..., decoder=...)``), for data points of shape ``shape``
(``input_shape``) and ``L`` latent dimensions:

* the encoder maps a batch ``(B, *shape)`` to a ``(B, 2 L)`` tensor (location, then the
  unconstrained scale, which :class:`GaussianEncoder` maps by
  :math:`\operatorname{softplus}(h) + \sigma_{\min}`) or to a pair ``(loc, scale)``;
* the decoder maps ``(B, L)`` to ``(B, num_params, *shape)`` (or, flat, to
  ``(B, num_params * prod(shape))``), ``num_params`` being the likelihood's;
  :class:`Decoder` flattens any leading sample dimensions before it and restores them after,
  so the module itself never sees them.

Built-ins (:data:`NETWORKS`): ``"mlp"`` (dense layers), ``"conv"`` (stride-2 convolutions
for 28x28 and 32x32 images with 1 or 3 channels) and ``"gated"`` (the gated dense layers of
Tomczak and Welling, 2018). They are plain ``torch.nn`` modules; the probabilistic meaning
lives in :mod:`pyro_vae.model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError

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
        raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class GatedDense(nn.Module):
    r"""A gated dense layer (Dauphin et al. 2017; Tomczak and Welling 2018):
    :math:`h = (W_1 x + b_1) \odot \sigma(W_2 x + b_2)`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.h = nn.Linear(in_dim, out_dim)
        self.g = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def gated_mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """:class:`GatedDense` layers of widths ``hidden``, then a linear output layer."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = [GatedDense(a, b) for a, b in zip(dims[:-1], dims[1:])]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


# --------------------------------------------------------------------------- the contract


class MaskedInput(nn.Module):
    """The encoder's input for data with missing (NaN) cells, after MIWAE (Mattei and
    Frellsen, 2019): ``net`` sees ``[x with NaN set to 0, mask]``, ``(B, 2 D)``, where the
    mask is 1 for an observed cell; a point without NaN is ``[x, 1]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        observed = ~torch.isnan(x)
        return self.net(torch.cat([torch.where(observed, x, torch.zeros_like(x)), observed.to(x.dtype)], -1))


class ScaledInput(nn.Module):
    """The encoder's input on a common scale: ``net`` sees ``(x - center) / spread`` per
    feature (NaN stays NaN for :class:`MaskedInput`). A table keeps counts and integers in
    their own units for their likelihoods; a network fed 300 beside 0.3 trains badly."""

    def __init__(self, net: nn.Module, center: Sequence[float], spread: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        self.register_buffer("spread", torch.tensor(spread, dtype=torch.float32))

    def forward(self, x: torch.Tensor):
        return self.net((x - self.center) / self.spread)


def input_scale(x: torch.Tensor, features: Sequence[bool] | None = None) -> dict[str, list[float]]:
    """The encoder's input scale from training data ``x`` (NaN cells ignored): each feature's
    mean and standard deviation (1 where it is constant), for the chosen ``features`` (default:
    all; the others keep center 0 and spread 1). Statistics in float64."""
    observed = ~torch.isnan(x)
    count = observed.sum(0).clamp(min=1)
    filled = torch.where(observed, x, torch.zeros_like(x)).double()
    center = filled.sum(0) / count
    var = (torch.where(observed, x.double() - center, torch.zeros_like(filled)) ** 2).sum(0) / count
    spread = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
    if features is not None:
        chosen = torch.as_tensor(list(features), dtype=torch.bool)
        center, spread = center.where(chosen, 0.0), spread.where(chosen, 1.0)
    return {"center": center.tolist(), "spread": spread.tolist()}


class GaussianEncoder(nn.Module):
    r"""Amortized diagonal Gaussian :math:`q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma(x)^2)`.

    ``net`` maps ``(B, *input_shape)`` to ``(B, 2 latent_dim)``, whose second half is mapped
    to the scale :math:`\operatorname{softplus}(h) + \sigma_{\min}`: smooth, strictly
    positive, and linear (not exponential) for large pre-activations, so one bad batch
    cannot overflow it. A ``net`` that returns a pair ``(loc, scale)`` gives the scale
    itself (it must be positive).
    """

    def __init__(
        self, net: nn.Module, latent_dim: int, input_shape: Sequence[int], min_scale: float = 1e-4
    ) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            loc, scale = out
            return loc, scale
        loc, raw_scale = out.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale

    def check(self) -> None:
        """One forward pass on zeros: a :class:`~pyro_vae.errors.ConfigError` naming the module
        and the expected shape unless the output follows the contract."""
        x = torch.zeros(2, *self.input_shape, device=_device_of(self))
        want = f"(2, {2 * self.latent_dim}) or a pair (loc, scale) of shape (2, {self.latent_dim}) each"
        out = _dry_run(self.net, x, "encoder", want)
        if isinstance(out, (tuple, list)):
            ok = len(out) == 2 and all(
                isinstance(t, torch.Tensor) and tuple(t.shape) == (2, self.latent_dim) for t in out
            )
            got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out]
        else:
            ok = isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 2 * self.latent_dim)
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if not ok:
            raise ConfigError(
                f"the encoder {type(self.net).__name__} maps a batch of 2 inputs of shape "
                f"{self.input_shape} to {got}; expected {want} (latent_dim={self.latent_dim})"
            )


class Decoder(nn.Module):
    """Maps ``z`` ``(..., latent_dim)`` to the likelihood's unconstrained parameters ``(..., num_params, *output_shape)``.

    ``net`` sees ``(B, latent_dim)`` only: leading sample dimensions are flattened into the
    batch before it and restored after. Its output may also be flat, ``(B, num_params * D)``.
    """

    def __init__(self, net: nn.Module, latent_dim: int, output_shape: Sequence[int], num_params: int) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        self.output_shape = tuple(output_shape)
        self.num_params = num_params
        #: The most numbers any layer of ``net`` produces per code (measured by :meth:`check`):
        #: what sizes evaluation's chunks, as a convolution's feature maps can outgrow its output.
        self.widest = num_params * math.prod(self.output_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, self.num_params, *self.output_shape)

    def check(self) -> None:
        """One forward pass on zeros; a :class:`~pyro_vae.errors.ConfigError` naming the module
        and the expected shape unless the output is ``(B, num_params, *output_shape)`` or flat."""
        want = (2, self.num_params, *self.output_shape)
        widths: list[int] = [self.widest]

        def record(module, inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() > 0:
                widths.append(output.numel() // max(1, output.shape[0]))

        hooks = [m.register_forward_hook(record) for m in self.net.modules()]
        try:
            out = _dry_run(
                self.net, torch.zeros(2, self.latent_dim, device=_device_of(self)), "decoder", want
            )
        finally:
            for h in hooks:
                h.remove()
        self.widest = max(widths)
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got not in (want, (2, self.num_params * math.prod(self.output_shape))):
            raise ConfigError(
                f"the decoder {type(self.net).__name__} maps a batch of 2 codes of dimension "
                f"{self.latent_dim} to {got}; expected {want}: (batch, num_params, *input_shape), "
                f"num_params = {self.num_params} being the likelihood's"
            )


def _device_of(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def _dry_run(net: nn.Module, x: torch.Tensor, role: str, want) -> object:
    """``net(x)`` in eval mode without gradients (running statistics untouched), the mode restored."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(x)
    except Exception as exc:  # any failure of a user's module: say what it was given
        raise ConfigError(
            f"the {role} {type(net).__name__} fails on a batch of shape {tuple(x.shape)} "
            f"({type(exc).__name__}: {exc}); it must map it to {want}"
        ) from exc
    finally:
        net.train(was_training)


# --------------------------------------------------------------------------- built-in networks


@dataclass(frozen=True)
class Network:
    """A built-in encoder/decoder family: builders of the raw modules and its default widths.

    ``encoder(input_shape, latent_dim, hidden, activation)`` maps ``(B, *input_shape)`` to
    ``(B, 2 latent_dim)``; ``decoder(input_shape, latent_dim, hidden, num_params, activation)``
    maps ``(B, latent_dim)`` to ``(B, num_params, *input_shape)`` or its flat form.
    """

    name: str
    encoder: Callable[..., nn.Module]
    decoder: Callable[..., nn.Module]
    default_hidden: tuple[int, ...]
    description: str


def _flat_input(shape: Sequence[int]) -> list[nn.Module]:
    return [nn.Flatten()] if len(shape) > 1 else []


def _mlp_encoder(shape, latent_dim, hidden, activation):
    net = mlp(math.prod(shape), hidden, 2 * latent_dim, activation)
    return nn.Sequential(nn.Flatten(), *net) if len(shape) > 1 else net


def _mlp_decoder(shape, latent_dim, hidden, num_params, activation):
    return mlp(latent_dim, hidden, num_params * math.prod(shape), activation)


def _gated_encoder(shape, latent_dim, hidden, activation):
    return nn.Sequential(*_flat_input(shape), *gated_mlp(math.prod(shape), hidden, 2 * latent_dim))


def _gated_decoder(shape, latent_dim, hidden, num_params, activation):
    return gated_mlp(latent_dim, hidden, num_params * math.prod(shape))


CONV_SIZES = (28, 32)
CONV_CHANNELS = (1, 3)
CONV_WIDTHS = (32, 64)


def conv_geometry(shape: Sequence[int]) -> tuple[int, int]:
    """(channels, side) of an image shape ``(C, H, W)`` or ``(H, W)`` that ``"conv"`` supports."""
    shape = tuple(shape)
    channels, size = (1, shape) if len(shape) == 2 else (shape[0], shape[1:])
    if len(shape) not in (2, 3) or channels not in CONV_CHANNELS or size not in {(s, s) for s in CONV_SIZES}:
        raise ConfigError(
            f"network 'conv' supports images of shape (C, H, W) or (H, W) with H = W in {CONV_SIZES} "
            f"and C in {CONV_CHANNELS}, got input shape {shape}: pass input_dim=(1, 28, 28) for "
            "MNIST-like data, or use network='mlp' or 'gated' (any shape)"
        )
    return channels, size[0]


def _conv_encoder(shape, latent_dim, hidden, activation):
    channels, side = conv_geometry(shape)
    a, b = CONV_WIDTHS
    act = ACTIVATIONS[activation]
    layers = [nn.Unflatten(1, (1, side))] if len(shape) == 2 else []
    layers += [nn.Conv2d(channels, a, 4, 2, 1), act(), nn.Conv2d(a, b, 4, 2, 1), act(), nn.Flatten()]
    return nn.Sequential(*layers, *mlp(b * (side // 4) ** 2, hidden, 2 * latent_dim, activation))


def _conv_decoder(shape, latent_dim, hidden, num_params, activation):
    channels, side = conv_geometry(shape)
    a, b = CONV_WIDTHS
    act, s = ACTIVATIONS[activation], side // 4
    layers = [*mlp(latent_dim, hidden, b * s * s, activation), act(), nn.Unflatten(1, (b, s, s))]
    layers += [
        nn.ConvTranspose2d(b, a, 4, 2, 1),
        act(),
        nn.ConvTranspose2d(a, num_params * channels, 4, 2, 1),
    ]
    if len(shape) == 3:
        layers.append(nn.Unflatten(1, (num_params, channels)))
    return nn.Sequential(*layers)


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("mlp", _mlp_encoder, _mlp_decoder, (256, 256), "dense layers with the activation"),
        Network(
            "conv",
            _conv_encoder,
            _conv_decoder,
            (),
            "two stride-2 convolutions (32, 64 channels) and transposed ones; 28x28 or 32x32 images, 1 or 3 channels",
        ),
        Network(
            "gated", _gated_encoder, _gated_decoder, (300, 300), "gated dense layers (Tomczak and Welling)"
        ),
    )
}


def network(name: str) -> Network:
    """The built-in network ``name`` (``"mlp"``, ``"conv"``, ``"gated"``)."""
    if name not in NETWORKS:
        raise ConfigError(
            f"unknown network {name!r}; choose one of {sorted(NETWORKS)}, or pass your own modules "
            "with VAE(..., encoder=..., decoder=...)"
        )
    return NETWORKS[name]
