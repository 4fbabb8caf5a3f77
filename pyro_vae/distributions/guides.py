r"""Guides :math:`q_\phi(z \mid x)`: the amortized posterior, a plug-in like the prior.

Every guide starts from the encoder's Gaussian, :math:`\mathcal N(\mu_\phi(x),
\operatorname{diag}\sigma_\phi(x)^2)` (:class:`~pyro_vae.nn.networks.GaussianEncoder`; the
encoder sees missing cells as NaN, :class:`~pyro_vae.nn.networks.MaskedInput`), and makes of it
a distribution over ``z`` with event shape ``(latent_dim,)`` and batch shape ``(n,)``. That
is the whole contract: the rest of the library uses only its ``rsample(sample_shape)`` and
``log_prob(z)`` (:meth:`pyro_vae.model.VAE.log_weights`), and, where they exist, its
``mean`` and ``variance``.

* ``diagonal`` (the default): the encoder's Gaussian itself;
* ``lowrank``: :math:`\mathcal N(\mu, \operatorname{diag}\sigma^2 + F F^\top)` with a
  ``latent_dim x rank`` factor :math:`F(x)` (``rank`` defaults to ``latent_dim``: every
  covariance), Pyro's ``LowRankMultivariateNormal``;
* ``flow``: the encoder's Gaussian pushed through ``layers`` conditional autoregressive
  transforms (IAF, Kingma et al. 2016: affine, or rational-quadratic splines, Durkan et al.
  2019), Pyro's ``ConditionalAffineAutoregressive`` / ``ConditionalSplineAutoregressive``
  inside a ``ConditionalTransformedDistribution``.

The factor and the flows are conditioned on a context from the encoder: its outputs
:math:`[\mu_\phi(x), \log\sigma_\phi(x)]`, so any encoder (the built-ins, your own) drives
every guide unchanged. A guide's own parameters train with the networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive, ConditionalSplineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.registry import Registry, Specified, UnregisteredName
from pyro_vae.utils import positive, positive_int

#: Draws behind :meth:`Guide.moments` for a guide whose moments have no closed form.
MOMENT_DRAWS = 1000
#: Numbers of z per chunk of those draws (2**18 floats: 1 MiB, however many points).
MOMENT_CHUNK_ELEMENTS = 2**18


def context(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""The context a guide is conditioned on: :math:`[\mu, \log\sigma]`, ``(n, 2 latent_dim)``."""
    return torch.cat([loc, scale.log()], -1)


class Guide(Specified, nn.Module):
    r"""Protocol for guides (subclass and :func:`register`): :meth:`forward` is required.

    :meth:`setup` is called once by the VAE with ``latent_dim`` (create parameters there,
    calling it from an override); :meth:`forward` maps the encoder's ``(loc, scale)``, each
    ``(n, latent_dim)``, to :math:`q(z \mid x)` with batch shape ``(n,)`` and event shape
    ``(latent_dim,)``, reparameterised (``has_rsample``).
    """

    name: ClassVar[str] = UnregisteredName()  # type: ignore[assignment]

    def setup(self, latent_dim: int) -> None:
        """Record ``latent_dim`` and create the guide's parameters; called once by the VAE."""
        self.latent_dim = latent_dim

    def forward(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError(
            f"guide {self.name!r} has no forward(loc, scale): it must return q(z|x), with batch shape (n,) "
            "and event shape (latent_dim,)"
        )

    def marginals(self, posterior: dist.Distribution) -> dist.Normal | None:
        r"""The one-dimensional marginals :math:`q(z_j \mid x)` as a ``Normal`` of batch shape
        ``(n, latent_dim)`` where they are Gaussian (the KL per dimension uses them), else None."""
        return None

    @torch.no_grad()
    def moments(self, posterior: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and standard deviation of ``posterior`` per point and dimension, each
        ``(n, latent_dim)``: its :meth:`marginals`' where they are Gaussian, else estimated
        from :data:`MOMENT_DRAWS` draws of a private random stream (seed 0; the global
        streams are left as they were), drawn a few at a time so that a large batch stays
        small in memory."""
        normal = self.marginals(posterior)
        if normal is not None:
            return normal.loc, normal.scale
        # Every initialised CUDA device's stream is forked: the draws may be on any of them.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        per_chunk = max(1, MOMENT_CHUNK_ELEMENTS // max(1, posterior.batch_shape.numel() * self.latent_dim))
        total, square = 0.0, 0.0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            for start in range(0, MOMENT_DRAWS, per_chunk):
                z = posterior.sample((min(per_chunk, MOMENT_DRAWS - start),))
                total = total + z.double().sum(0)
                square = square + (z.double() ** 2).sum(0)
        mean = total / MOMENT_DRAWS
        var = ((square - MOMENT_DRAWS * mean**2) / (MOMENT_DRAWS - 1)).clamp_min(0)
        return mean.to(z.dtype), var.sqrt().to(z.dtype)


REGISTRY: Registry[Guide] = Registry("guide", base=Guide)
register, create, names = REGISTRY.register, REGISTRY.create, REGISTRY.names


@register("diagonal")
class DiagonalGuide(Guide):
    r""":math:`q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma(x)^2)`: the encoder's Gaussian."""

    def forward(self, loc, scale):
        return dist.Normal(loc, scale).to_event(1)

    def marginals(self, posterior):
        base = getattr(posterior, "base_dist", None)  # None for another law (a subclass's traced guide)
        return base if isinstance(posterior, dist.Independent) and isinstance(base, dist.Normal) else None


#: The lowrank guide's factor starts at this fraction of torch's default initial scale.
FACTOR_INIT_SCALE = 0.01


class _SmallLinear(nn.Linear):
    """``nn.Linear`` initialised at :data:`FACTOR_INIT_SCALE` of torch's scale (also when
    :meth:`pyro_vae.model.VAE.reset_parameters` re-initialises it): the guide starts as
    nearly the diagonal Gaussian. At full scale a random factor cost the digits model of
    ``docs/guides.md`` 1.5 nats of test log p(x) after 400 epochs."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.weight.mul_(FACTOR_INIT_SCALE)
            self.bias.mul_(FACTOR_INIT_SCALE)


@register("lowrank")
class LowRankGuide(Guide):
    r""":math:`q(z \mid x) = \mathcal N\big(\mu(x), \operatorname{diag}\sigma(x)^2 + F(x) F(x)^\top\big)`.

    :math:`F(x)` is ``latent_dim x rank``, a linear map of the context
    :math:`[\mu, \log\sigma]` (with a bias: a covariance shared by all points, as the exact
    posterior of factor analysis has, is one of its solutions). ``rank=None`` is
    ``latent_dim``: every covariance matrix, a full-rank Gaussian.

    Args:
        rank: columns of the factor (default: ``latent_dim``).
    """

    def __init__(self, rank: int | None = None) -> None:
        super().__init__()
        self.rank = None if rank is None else positive_int("rank", rank)

    def setup(self, latent_dim):
        super().setup(latent_dim)
        self.columns = latent_dim if self.rank is None else self.rank
        self.factor = _SmallLinear(2 * latent_dim, latent_dim * self.columns)

    def forward(self, loc, scale):
        factor = self.factor(context(loc, scale)).unflatten(-1, (self.latent_dim, self.columns))
        return dist.LowRankMultivariateNormal(loc, factor, scale**2)

    def marginals(self, posterior):
        if not isinstance(posterior, dist.LowRankMultivariateNormal):
            return None
        return dist.Normal(posterior.loc, posterior.variance.sqrt())


TRANSFORMS = ("affine", "spline")


@register("flow")
class FlowGuide(Guide):
    r""":math:`z = f_K \circ \dots \circ f_1(z_0)`, :math:`z_0 \sim \mathcal N(\mu(x), \operatorname{diag}\sigma(x)^2)`:
    ``layers`` conditional autoregressive transforms conditioned on :math:`[\mu, \log\sigma]`.

    ``transform="affine"`` is the inverse autoregressive flow (Kingma et al. 2016),
    :math:`f(z)_j = m_j(z_{<j}, c) + s_j(z_{<j}, c)\, z_j`; ``"spline"`` uses monotone
    rational-quadratic splines on :math:`[-\text{bound}, \text{bound}]` (identity outside).
    Drawing ``z`` is one pass per layer; its density at a draw of its own is exact and free
    (Pyro caches the inverse); at any other ``z`` it inverts each layer in ``latent_dim``
    passes. Successive layers reverse the order of the coordinates.

    Args:
        layers: number of transforms.
        transform: ``"affine"`` or ``"spline"``.
        hidden: widths of each transform's autoregressive network (default ``[10 latent_dim]``).
        count_bins: segments of each spline.
        bound: half-width of the splines' interval.
    """

    def __init__(
        self,
        layers: int = 2,
        transform: str = "affine",
        hidden: Sequence[int] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
    ) -> None:
        super().__init__()
        self.layers = positive_int("layers", layers)
        if transform not in TRANSFORMS:
            raise ConfigError(
                f"guide 'flow': transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}"
            )
        self.transform = transform
        if hidden is not None and (isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence)):
            raise ConfigError(f"guide 'flow': hidden must be a list of layer widths, got {hidden!r}")
        self.hidden = None if hidden is None else tuple(positive_int("hidden width", h) for h in hidden)
        self.count_bins = positive_int("count_bins", count_bins)
        self.bound = positive("bound", bound)

    def setup(self, latent_dim):
        super().setup(latent_dim)
        hidden = list(self.hidden) if self.hidden is not None else [10 * latent_dim]
        # Alternate layers in opposite orders (not Pyro's random permutation): with two layers
        # every coordinate depends on every other, whatever latent_dim is.
        orders = [torch.arange(latent_dim), torch.arange(latent_dim - 1, -1, -1)]
        self.flows = nn.ModuleList(self._layer(hidden, orders[i % 2]) for i in range(self.layers))

    def _layer(self, hidden: list[int], order: torch.Tensor) -> nn.Module:
        L = self.latent_dim
        if self.transform == "affine":
            arn = ConditionalAutoRegressiveNN(L, 2 * L, hidden, permutation=order)
            return ConditionalAffineAutoregressive(arn)
        bins = self.count_bins
        arn = ConditionalAutoRegressiveNN(
            L, 2 * L, hidden, param_dims=[bins, bins, bins - 1, bins], permutation=order
        )
        return ConditionalSplineAutoregressive(L, arn, count_bins=bins, bound=self.bound, order="linear")

    def forward(self, loc, scale):
        q = dist.ConditionalTransformedDistribution(dist.Normal(loc, scale).to_event(1), list(self.flows))
        return q.condition(context(loc, scale))
