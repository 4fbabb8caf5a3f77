r"""Priors :math:`p(z)` over the latent code.

Swapping the prior is the principled way to change what the KL term charges for:
``KL(q(z|x) || p(z))`` is part of a valid bound on :math:`\log p(x)` for *every* prior,
so a learned or richer prior lowers the KL cost without giving up the bound (unlike a
weight in front of the KL).

A prior is an ``nn.Module`` whose ``forward()`` returns a distribution with
``event_shape == (latent_dim,)`` and empty batch shape (the model's plate broadcasts it).
That is all a new prior needs: ``marginal_log_prob(z)``, the log densities of the
one-dimensional marginals :math:`\log p(z_j)` used for the KL per dimension, defaults to a
kernel estimate from draws of ``forward()`` (:meth:`Prior.marginal_log_prob`); the
factorised priors and the mixtures override it with their exact marginals. Learned
parameters are ordinary ``nn.Parameter`` s and train with the networks.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vae.registry import Registry, Specified, UnregisteredName
from pyro_vae.utils import positive, positive_int


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Prior(Specified, nn.Module):
    r"""Protocol for priors (subclass and :func:`register`); only :meth:`forward` is required.

    The defaults: :meth:`setup` records ``latent_dim`` (call it from an override),
    :meth:`initialize` does nothing, :meth:`marginal_log_prob` is a Gaussian kernel
    density estimate on ``marginal_draws`` draws of ``forward()``, and an unregistered
    class is named after itself (its spec then cannot be rebuilt by name until it is
    registered).
    """

    name: ClassVar[str] = UnregisteredName()  # type: ignore[assignment]
    #: Draws behind the default :meth:`marginal_log_prob` (an attribute, so a subclass may change it).
    marginal_draws: int = 4096

    def setup(self, latent_dim: int, input_dim: int, encoder: nn.Module) -> None:
        """Create parameters; called once by the VAE. ``encoder`` is for priors built from it."""
        self.latent_dim = latent_dim
        self.register_buffer("_origin", torch.zeros(latent_dim), persistent=False)

    def forward(self) -> dist.Distribution:
        raise NotImplementedError(
            f"prior {self.name!r} has no forward(): it must return the distribution of z, "
            "with event shape (latent_dim,) and empty batch shape"
        )

    def marginal_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r"""``log p(z_j)`` for each coordinate of ``z``: shape ``(..., latent_dim)``.

        The default estimates each one-dimensional marginal with a Gaussian kernel density
        estimate on :math:`M` = ``marginal_draws`` fixed draws :math:`z^{(m)} \sim p(z)`,

        .. math::
            \hat p(z_j) = \frac1M \sum_{m=1}^M \mathcal N\big(z_j;\ z^{(m)}_j,\ h_j^2\big),
            \qquad h_j = 0.53\,\hat\sigma_j\,M^{-1/5}

        (half of Silverman's rule of thumb: marginals of learned priors are often
        multimodal, which the full rule over-smooths). Its standard error relative to
        :math:`p` is about :math:`(2\sqrt\pi\,M h_j\,p(z_j))^{-1/2}` (3% at the mode of a
        unit Gaussian), its bias :math:`\tfrac12 h_j^2 p''/p` (about 1% there). The draws
        come from seed 0 in a forked random stream (the global one is left untouched), and
        the estimate is tabulated on a grid once per state of the prior's parameters and
        buffers, so it is a fixed, cheap function between optimiser steps. A prior whose
        law depends on modules it does not own should override this.
        """
        draws, bandwidth, lo, hi, log_density = self._marginal_table()
        flat = z.reshape(-1, self.latent_dim)
        points = log_density.shape[0]
        pos = (flat - lo) / (hi - lo) * (points - 1)
        i0 = pos.floor().clamp(0, points - 2).long()
        frac = (pos - i0).clamp(0, 1)
        out = log_density.gather(0, i0) * (1 - frac) + log_density.gather(0, i0 + 1) * frac
        outside = ((pos < 0) | (pos > points - 1)).any(-1)
        if outside.any():  # beyond every draw by 8 bandwidths: rare, computed directly
            out[outside] = self._kde(flat[outside], draws, bandwidth)
        return out.reshape(z.shape)

    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation from a sample of training data (default: none)."""

    # ------------------------------------------------------------------ kernel marginals

    @torch.no_grad()
    def _marginal_draws(self) -> torch.Tensor:
        """``marginal_draws`` draws of ``forward()``, ``(M, latent_dim)``, from a private stream."""
        device = self._origin.device
        # Seeded in a fork: reporting marginals must not move the global random stream.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            try:
                z = self().sample((self.marginal_draws,))
            except NotImplementedError:
                raise NotImplementedError(
                    f"prior {self.name!r} cannot sample, so its marginals cannot be estimated: "
                    "give its distribution a sample() or the prior a marginal_log_prob(z)"
                ) from None
        return z.reshape(self.marginal_draws, self.latent_dim)

    @staticmethod
    def _kde(points: torch.Tensor, draws: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
        """Per-coordinate Gaussian kernel log density at ``points`` (N, L), chunked over rows."""
        m, latent_dim = draws.shape
        rows = max(1, (1 << 22) // (m * latent_dim))
        parts = [
            torch.logsumexp(dist.Normal(draws, bandwidth).log_prob(chunk.unsqueeze(-2)), dim=-2) - math.log(m)
            for chunk in points.split(rows)
        ]
        return torch.cat(parts) if parts else points.new_empty(0, latent_dim)

    def _state_key(self) -> tuple:
        """Changes whenever a parameter or buffer is updated in place, replaced or moved."""
        tensors = [*self.parameters(), *self.buffers()]
        return tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)

    @torch.no_grad()
    def _marginal_table(self) -> tuple[torch.Tensor, ...]:
        """The kernel estimate tabulated on a fine grid per coordinate, cached until the state changes."""
        key = self._state_key()
        cached = self.__dict__.get("_table")
        if cached is not None and cached[0] == key:
            return cached[1]
        draws = self._marginal_draws()  # (M, L)
        bandwidth = 0.53 * draws.std(0).clamp_min(1e-6) * draws.shape[0] ** (-0.2)
        lo = draws.min(0).values - 8 * bandwidth
        hi = draws.max(0).values + 8 * bandwidth
        # Spacing of at most a tenth of the bandwidth: linear interpolation of the log
        # density is then exact to well below the estimate's own error.
        points = int(min(8192, max(512, ((hi - lo) / bandwidth).max().item() * 10)))
        grid = lo + (hi - lo) * torch.linspace(0, 1, points, device=lo.device, dtype=lo.dtype).unsqueeze(-1)
        table = (draws, bandwidth, lo, hi, self._kde(grid, draws, bandwidth))
        self.__dict__["_table"] = (key, table)
        return table


REGISTRY: Registry[Prior] = Registry("prior", base=Prior)
register, create, names = REGISTRY.register, REGISTRY.create, REGISTRY.names


class FactorizedPrior(Prior):
    """A prior with independent coordinates, given by a batch of ``latent_dim`` 1-D laws."""

    def base(self) -> dist.Distribution:
        raise NotImplementedError

    def forward(self):
        return self.base().to_event(1)

    def marginal_log_prob(self, z):
        return self.base().log_prob(z)


@register("standard_normal")
class StandardNormal(FactorizedPrior):
    r""":math:`z \sim \mathcal N(0, I)`."""

    def base(self):
        return dist.Normal(self._origin, torch.ones_like(self._origin))


class FixedScalePrior(FactorizedPrior):
    """Base for independent coordinates ``family(0, s)`` with one fixed scale ``s``."""

    family: ClassVar[type[dist.Distribution]]

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = positive("scale", scale)

    def base(self):
        return self.family(self._origin, torch.full_like(self._origin, self.scale))


@register("normal")
class ScaledNormal(FixedScalePrior):
    r""":math:`z \sim \mathcal N(0, s^2 I)` with a fixed scale ``s``.

    Per dimension, :math:`\mathrm{KL}(\mathcal N(\mu,\sigma^2)\,\|\,\mathcal N(0,s^2)) =
    \log\frac{s}{\sigma} + \frac{\sigma^2+\mu^2}{2s^2} - \frac12`: a wider prior charges
    less for spread-out codes but more for small posterior scales.
    """

    family = dist.Normal


@register("learned_normal")
class LearnedNormal(FactorizedPrior):
    r""":math:`z \sim \mathcal N(m, \operatorname{diag} s^2)` with learned ``m`` and ``s``."""

    def __init__(self, init_scale: float = 1.0) -> None:
        super().__init__()
        self.init_scale = positive("init_scale", init_scale)

    def setup(self, latent_dim, input_dim, encoder):
        super().setup(latent_dim, input_dim, encoder)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), _inverse_softplus(self.init_scale)))

    def base(self):
        return dist.Normal(self.loc, F.softplus(self.raw_scale))


@register("laplace")
class LaplacePrior(FixedScalePrior):
    r""":math:`z_j \sim \mathrm{Laplace}(0, b)` with a fixed scale ``b``: sparser codes than a Gaussian."""

    family = dist.Laplace


@register("student_t")
class StudentTPrior(FactorizedPrior):
    r""":math:`z_j \sim t_\nu(0, s)`: heavy tails let a few codes sit far out cheaply."""

    def __init__(self, df: float = 3.0, scale: float = 1.0) -> None:
        super().__init__()
        self.df = positive("df", df)
        self.scale = positive("scale", scale)

    def base(self):
        o = self._origin
        return dist.StudentT(torch.full_like(o, self.df), o, torch.full_like(o, self.scale))


class DiagonalGaussianMixture(dist.TorchDistribution):
    r""":math:`p(z) = \sum_k w_k\,\mathcal N(z; m_k, \operatorname{diag} s_k^2)` with a fast density.

    The same law as ``MixtureSameFamily(Categorical(logits), Normal(loc, scale).to_event(1))``,
    but ``log_prob`` expands the squares,

    .. math::
        \sum_j \frac{(z_j - m_{kj})^2}{s_{kj}^2} = (z \odot z)\,P_k^\top - 2\,z\,(m_k \odot P_k)^\top
        + \sum_j m_{kj}^2 P_{kj}, \qquad P_k = s_k^{-2},

    into two matrix products instead of an ``(n, K, L)`` tensor: 500 components cost about
    as much as one more linear layer. The products run in float64, so the cancellation in
    the expansion stays far below float32 precision even for narrow components.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, validate_args=None
    ) -> None:
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(torch.Size(), loc.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        latent_dim = self.loc.shape[-1]
        z = value.reshape(-1, latent_dim).double()
        prec = self.scale.double().pow(-2)
        loc = self.loc.double()
        quad = (z * z) @ prec.T - 2 * z @ (loc * prec).T + (loc * loc * prec).sum(-1)
        log_norm = -self.scale.double().log().sum(-1) - 0.5 * latent_dim * math.log(2 * math.pi)
        log_w = torch.log_softmax(self.logits.double(), -1)
        out = torch.logsumexp(log_w + log_norm - 0.5 * quad, dim=-1)
        return out.to(value.dtype).reshape(value.shape[:-1])

    def sample(self, sample_shape=()) -> torch.Tensor:
        # Only the density needs to be fast (it runs every step); draws are torch's own.
        mixture = dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits), dist.Normal(self.loc, self.scale).to_event(1)
        )
        with torch.no_grad():
            return mixture.sample(sample_shape)


class DiagonalGaussianMixturePrior(Prior):
    r"""Base for priors :math:`p(z) = \sum_k w_k\,\mathcal N(z; m_k, \operatorname{diag} s_k^2)`.

    Subclasses give ``components() -> (logits, loc, scale)`` with shapes
    ``(K,)``, ``(K, latent_dim)``, ``(K, latent_dim)``. The KL against such a prior has no
    closed form; the ELBOs estimate it by Monte Carlo.
    """

    def components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self):
        return DiagonalGaussianMixture(*self.components())

    def marginal_log_prob(self, z):
        logits, loc, scale = self.components()
        log_w = torch.log_softmax(logits, -1).unsqueeze(-1)  # (K, 1)
        log_comp = dist.Normal(loc, scale).log_prob(z.unsqueeze(-2))  # (..., K, L)
        return torch.logsumexp(log_w + log_comp, dim=-2)


@register("mixture")
class MixturePrior(DiagonalGaussianMixturePrior):
    """A learned mixture of ``num_components`` diagonal Gaussians (weights, means, scales)."""

    def __init__(self, num_components: int = 10, init_spread: float = 1.0) -> None:
        super().__init__()
        self.num_components = positive_int("num_components", num_components)
        self.init_spread = positive("init_spread", init_spread)

    def setup(self, latent_dim, input_dim, encoder):
        super().setup(latent_dim, input_dim, encoder)
        k = self.num_components
        self.logits = nn.Parameter(torch.zeros(k))
        # Distinct initial means break the symmetry between components.
        self.loc = nn.Parameter(self.init_spread * torch.randn(k, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((k, latent_dim), _inverse_softplus(1.0)))

    def components(self):
        return self.logits, self.loc, F.softplus(self.raw_scale) + 1e-4


@register("vamp")
class VampPrior(DiagonalGaussianMixturePrior):
    r"""VampPrior (Tomczak and Welling, 2018): :math:`p(z) = \frac1K\sum_k q(z \mid u_k)`.

    The prior is the encoder's own posterior averaged over ``K`` learned pseudo-inputs
    :math:`u_k` in data space, an approximation of the aggregate posterior, which is the
    prior that maximises the ELBO. :meth:`initialize` sets the pseudo-inputs to random
    training points.
    """

    def __init__(self, num_components: int = 50, init_noise: float = 0.01) -> None:
        super().__init__()
        self.num_components = positive_int("num_components", num_components)
        self.init_noise = init_noise

    def setup(self, latent_dim, input_dim, encoder):
        super().setup(latent_dim, input_dim, encoder)
        # Kept outside the module tree: the encoder already belongs to the VAE, and
        # registering it twice would duplicate its weights in the state dict.
        self.__dict__["_encoder"] = encoder
        shape = getattr(encoder, "input_shape", (input_dim,))  # images: pseudo-images of their shape
        self.pseudo_inputs = nn.Parameter(0.5 + self.init_noise * torch.randn(self.num_components, *shape))

    def initialize(self, x):
        idx = torch.randperm(x.shape[0])[: self.num_components]
        if idx.numel() < self.num_components:
            idx = idx[torch.randint(idx.numel(), (self.num_components,))]
        init = x[idx].to(self.pseudo_inputs).reshape(self.pseudo_inputs.shape)
        # Missing cells (NaN) would make the weights non-finite: the pseudo-inputs start fully
        # observed, each missing cell at its feature's observed mean (0.5 where none is observed).
        observed_mean = torch.nanmean(x.to(self.pseudo_inputs).reshape(x.shape[0], *init.shape[1:]), 0)
        init = torch.where(torch.isnan(init), torch.nan_to_num(observed_mean, nan=0.5).expand_as(init), init)
        with torch.no_grad():
            self.pseudo_inputs.copy_(init + self.init_noise * torch.randn_like(init))

    def components(self):
        loc, scale = self._encoder(self.pseudo_inputs)
        return torch.zeros(self.num_components, device=loc.device, dtype=loc.dtype), loc, scale


@register("flow")
class FlowPrior(Prior):
    r"""A normalizing-flow prior: :math:`z = f(u)`, :math:`u \sim \mathcal N(0, I)`, learned.

    :math:`f` chains ``num_layers`` of Pyro's rational-quadratic spline coupling transforms
    (:class:`pyro.distributions.transforms.SplineCoupling`, Durkan et al. 2019), reversing
    the coordinates between layers so that every coordinate is transformed; with one latent
    dimension the layers are element-wise splines. By the change of variables,

    .. math::
        \log p(z) = \log \mathcal N\big(f^{-1}(z); 0, I\big)
                    + \log\Big|\det \frac{\partial f^{-1}(z)}{\partial z}\Big|,

    which Pyro's ``TransformedDistribution`` evaluates in one parallel pass (coupling layers
    invert as cheaply as they run forward). Outside ``[-bound, bound]`` each spline is the
    identity. The flow's one-dimensional marginals have no closed form:
    the default :meth:`Prior.marginal_log_prob` (used only to report KL per latent
    dimension) estimates them with a Gaussian kernel density estimate on ``marginal_draws``
    fixed draws of the flow (within about 0.05 in L1 distance of the true marginal in the
    tests).
    """

    def __init__(
        self,
        num_layers: int = 2,
        hidden: int = 64,
        count_bins: int = 8,
        bound: float = 5.0,
        marginal_draws: int = 4096,
    ) -> None:
        super().__init__()
        self.num_layers = positive_int("num_layers", num_layers)
        self.hidden = positive_int("hidden", hidden)
        self.count_bins = positive_int("count_bins", count_bins)
        self.bound = positive("bound", bound)
        self.marginal_draws = positive_int("marginal_draws", marginal_draws)

    def setup(self, latent_dim, input_dim, encoder):
        super().setup(latent_dim, input_dim, encoder)
        if latent_dim == 1:
            layers = [
                T.Spline(1, count_bins=self.count_bins, bound=self.bound) for _ in range(self.num_layers)
            ]
        else:
            layers = [
                T.spline_coupling(
                    latent_dim,
                    hidden_dims=[self.hidden, self.hidden],
                    count_bins=self.count_bins,
                    bound=self.bound,
                )
                for _ in range(self.num_layers)
            ]
        self.layers = nn.ModuleList(layers)
        self._start_at_identity()
        # A buffer, so the permutation follows the module to another device.
        self.register_buffer("_reverse", torch.arange(latent_dim - 1, -1, -1), persistent=False)

    @torch.no_grad()
    def _start_at_identity(self) -> None:
        """Start from :math:`f \\approx \\mathrm{id}` (within 0.01 nats of the standard normal prior).

        Pyro draws spline parameters at random, which makes the initial density spiky
        (peaks of 50 and more in two dimensions): a poor prior to start a VAE from. Equal
        bin widths and heights with unit knot slopes make each spline the identity; the
        coupling networks' last layers start at zero weights, so they output those values
        whatever the conditioning half, and still receive gradients.
        """
        k = self.count_bins
        unit_slope = _inverse_softplus(1.0 - 1e-3)  # Pyro adds a minimum slope of 1e-3

        def identity_values(d: int) -> torch.Tensor:
            return torch.cat(
                [torch.zeros(2 * d * k), torch.full((d * (k - 1),), unit_slope), torch.zeros(d * k)]
            )

        for layer in self.layers:
            splines = [layer] if isinstance(layer, T.Spline) else [layer.lower_spline]
            for spline in splines:
                spline.unnormalized_widths.zero_()
                spline.unnormalized_heights.zero_()
                spline.unnormalized_derivatives.fill_(unit_slope)
                spline.unnormalized_lambdas.zero_()
            if not isinstance(layer, T.Spline):
                last = layer.upper_spline.nn.layers[-1]
                last.weight.zero_()
                last.bias.copy_(identity_values(self.latent_dim - layer.split_dim))

    def transforms(self) -> list[dist.transforms.Transform]:
        """The chain :math:`f` from base noise to latent code."""
        out: list[dist.transforms.Transform] = []
        for layer in self.layers:
            out.append(layer)
            if self.latent_dim > 1:
                out.append(T.Permute(self._reverse))
        return out

    def forward(self):
        base = dist.Normal(self._origin, torch.ones_like(self._origin)).to_event(1)
        return dist.TransformedDistribution(base, self.transforms())
