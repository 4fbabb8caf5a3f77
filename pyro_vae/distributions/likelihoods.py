r"""Likelihoods: the distribution of the observation site ``"x"``.

A likelihood turns the decoder's unconstrained outputs ``(..., num_params, *event_shape)``
into a distribution over one data point, with one batch element per feature (the model
adds ``.to_event(len(event_shape))``): a data point is a vector ``(D,)`` or an image such as
``(1, 28, 28)``, and the parameter axis is ``param_dim = -(len(event_shape) + 1)``.
Each class declares

* ``num_params``: how many decoder outputs it needs per feature;
* ``support``: the data it can score, checked at the public boundary;
* ``discrete``: whether ``log_prob`` is a log probability (``True``) or a log density.

Parameters that do not depend on ``z`` (a shared noise scale, Student-t degrees of
freedom) are created in :meth:`Likelihood.setup`, once the shape of a data point is known,
and have that shape (one value per feature).

Every class is registered by name; ``likelihoods.create("gaussian", min_scale=1e-2)``
and ``likelihoods.Gaussian(min_scale=1e-2)`` are the same thing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, DataError
from pyro_vae.registry import Registry, Specified, UnregisteredName
from pyro_vae.utils import positive


@dataclass(frozen=True)
class Support:
    """A set of data values a likelihood can score."""

    name: str
    description: str
    check: Callable[[torch.Tensor], torch.Tensor]  # elementwise bool
    #: A value inside the support that stands in for a missing (NaN) cell before ``log_prob``
    #: (whose term is then masked out): NaN must never reach a density, not even its gradient.
    placeholder: float = 0.0

    def contains(self, x: torch.Tensor) -> bool:
        """Whether every observed value of ``x`` lies in the support (NaN cells are missing)."""
        return bool((self.check(x) | torch.isnan(x)).all())


REAL = Support("real", "any finite real number", torch.isfinite)
BINARY = Support("binary", "the values 0 and 1", lambda x: (x == 0) | (x == 1))
UNIT_INTERVAL = Support(
    "unit_interval", "the closed interval [0, 1]", lambda x: (x >= 0) & (x <= 1), placeholder=0.5
)
OPEN_UNIT_INTERVAL = Support(
    "open_unit_interval",
    "the open interval (0, 1), endpoints excluded",
    lambda x: (x > 0) & (x < 1),
    placeholder=0.5,
)
INTEGER = Support("integer", "the integers", lambda x: torch.isfinite(x) & (x == x.round()))
NONNEGATIVE_INTEGER = Support(
    "nonnegative_integer",
    "the integers 0, 1, 2, ...",
    lambda x: torch.isfinite(x) & (x >= 0) & (x == x.round()),
)


def categories(k: int) -> Support:
    """The category codes ``0, 1, ..., k - 1``."""
    return Support(
        f"categories_{k}",
        f"the category codes 0, 1, ..., {k - 1}",
        lambda x: (x >= 0) & (x < k) & (x == x.round()),
    )


def choose_likelihood(x: torch.Tensor | Iterable[torch.Tensor]) -> tuple[str, str]:
    """The likelihood ``"auto"`` picks for data ``x`` (a tensor or batches), with the reason.

    Binary data: ``bernoulli``; inside [0, 1]: ``continuous_bernoulli``; non-negative
    integers: ``negative_binomial`` (over-dispersed counts are the rule, and it has
    Poisson as a limit); anything else: ``gaussian`` with a learned ``sigma(z)``.
    """
    candidates = [
        (BINARY, "bernoulli", "the data are binary (0/1)"),
        (UNIT_INTERVAL, "continuous_bernoulli", "the data lie in [0, 1] but are not binary"),
        (NONNEGATIVE_INTEGER, "negative_binomial", "the data are non-negative integers (counts)"),
    ]
    fits = [True] * len(candidates)
    for batch in [x] if isinstance(x, torch.Tensor) else x:
        fits = [f and s.contains(batch) for f, (s, _, _) in zip(fits, candidates)]
    for f, (_, name, reason) in zip(fits, candidates):
        if f:
            return name, reason
    return "gaussian", "the data are real-valued"


MIN_ROWS_PER_COLUMN = 20


def choose_columns(x: torch.Tensor) -> tuple[dict | None, str]:
    """A per-column ``"columns"`` spec for a table ``x`` ``(n, D)`` whose columns are of
    different kinds (say real, binary and counts), else ``None``; with the reason.

    Used by ``"auto"`` when the whole table would get a ``gaussian`` or a
    ``negative_binomial``: each column then gets :func:`choose_likelihood`'s choice for it.
    Tables inside [0, 1] (grey levels) keep one likelihood for all columns, and so do tables
    of fewer than ``MIN_ROWS_PER_COLUMN`` rows (too few values to tell a column's kind).
    """
    if x.dim() != 2 or x.shape[0] < MIN_ROWS_PER_COLUMN:
        return None, ""
    if choose_likelihood(x)[0] not in ("gaussian", "negative_binomial"):
        return None, ""
    chosen = [choose_likelihood(x[:, d])[0] for d in range(x.shape[1])]
    if len(set(chosen)) == 1:
        return None, ""
    kinds = ", ".join(f"{chosen.count(n)} {n}" for n in sorted(set(chosen)))
    return {
        "name": "columns",
        "options": {"columns": chosen},
    }, f"the columns are of different kinds ({kinds})"


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Likelihood(Specified, nn.Module):
    """Protocol for observation distributions (subclass and :func:`register`)."""

    name: ClassVar[str] = UnregisteredName()  # type: ignore[assignment]
    num_params: ClassVar[int] = 1
    support: ClassVar[Support] = REAL
    discrete: ClassVar[bool] = False
    #: The axis of ``params`` that indexes the parameters: ``-(len(event_shape) + 1)``.
    param_dim: int = -2

    def setup(self, input_shape: int | tuple[int, ...]) -> None:
        """Create per-feature parameters of shape ``event_shape``; called once by the VAE.

        ``input_shape`` is the number of features ``D`` (vectors) or the shape of one data
        point (images); ``event_shape`` is ``(D,)`` or that shape, ``input_dim`` its size.
        """
        self.event_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        self.input_dim = math.prod(self.event_shape)
        self.param_dim = -(len(self.event_shape) + 1)

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        """``params`` has shape ``(..., num_params, *event_shape)``; returns batch shape ``(..., *event_shape)``."""
        raise NotImplementedError

    def unbind(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The ``num_params`` parameter tensors, each ``(..., *event_shape)``."""
        return params.unbind(self.param_dim)

    def only(self, params: torch.Tensor) -> torch.Tensor:
        """The one parameter tensor of a ``num_params = 1`` likelihood, ``(..., *event_shape)``."""
        return params.squeeze(self.param_dim)

    def observation(self, params: torch.Tensor, x: torch.Tensor) -> dist.Distribution:
        """The distribution of the observation site given the observed batch ``x``.

        Almost every likelihood ignores ``x`` here; one whose parameters are fitted to the
        batch in closed form (``gaussian_optimal``) uses it.
        """
        return self(params)

    def mean(self, d: dist.Distribution) -> torch.Tensor:
        """The reconstruction shown to people: the distribution's mean."""
        return d.mean

    def weighted_mean(self, d: dist.Distribution, weights: torch.Tensor) -> torch.Tensor:
        """``sum_k weights[k] * mean(d)[k]`` over draws of z (dim 0): the self-normalised
        importance estimate of ``E[x | observed part]`` that imputation fills in.
        ``weights`` is ``(K, n)`` and sums to 1 over ``K``."""
        mean = self.mean(d)
        return (weights.reshape(*weights.shape, *[1] * (mean.dim() - 2)) * mean).sum(0)

    def given(self, d: dist.Distribution, x: torch.Tensor, observed: torch.Tensor) -> dist.Distribution:
        """The distribution of each point's missing cells given its observed ones, under ``d``
        (this likelihood's, batch ``(..., *event_shape)``), which imputation fills them from.

        ``x`` holds placeholders in the missing cells and ``observed`` marks the others. The
        cells of almost every likelihood are independent given ``z``: ``d`` itself; one whose
        noise correlates them (``gaussian_lowrank``) conditions on the observed cells.
        """
        return d

    def placeholder(self, x: torch.Tensor) -> torch.Tensor:
        """Values in the support, shaped like one data point of ``x``, for its missing cells."""
        return torch.full(x.shape[1:], self.support.placeholder, dtype=x.dtype, device=x.device)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise :class:`~pyro_vae.errors.DataError` if ``x`` holds values this likelihood cannot score.

        NaN cells are missing and not checked. The message names the remedy for Python
        callers and for the command line.
        """
        if not self.support.contains(x):
            bad = x[~(self.support.check(x) | torch.isnan(x))]
            suggestion, reason = choose_likelihood(x)
            raise DataError(
                f"likelihood {self.name!r} scores data in {self.support.description}, but "
                f"{bad.numel()} values lie outside it (for example {bad[0].item():.6g}). "
                f"{reason.capitalize()}: use likelihood={suggestion!r} or 'auto' (command line: "
                f"--likelihood {suggestion}), or transform the data with pyro_vae.data's "
                f"dequantize_levels=K or standardize=True (command line: --dequantize, --standardize)."
            )


REGISTRY: Registry[Likelihood] = Registry("likelihood", base=Likelihood)
register, create, names = REGISTRY.register, REGISTRY.create, REGISTRY.names


# --------------------------------------------------------------------------- Gaussian


class LocationScale(Likelihood):
    r"""Base for a location-scale ``family`` whose location and scale both come from the decoder.

    The scale is :math:`\operatorname{softplus}(h) + s_{\min}`: without the floor, a feature
    that is constant in the data lets the scale go to 0 and the density grow without bound.
    """

    num_params = 2
    family: ClassVar[type[dist.Distribution]]

    def __init__(self, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.min_scale = positive("min_scale", min_scale)

    def forward(self, params):
        loc, raw_scale = self.unbind(params)
        return self.family(loc, F.softplus(raw_scale) + self.min_scale, validate_args=False)


@register("gaussian")
class Gaussian(LocationScale):
    r"""Heteroscedastic Gaussian :math:`x_d \sim \mathcal N(\mu_d(z), \sigma_d(z)^2)`, :math:`\sigma \ge` ``min_scale``."""

    family = dist.Normal


@register("gaussian_shared")
class GaussianShared(Likelihood):
    r"""Gaussian with one learned scale per feature: :math:`x_d \sim \mathcal N(\mu_d(z), \sigma_d^2)`.

    With ``hidden=()`` and a standard normal prior this is exactly factor analysis.
    """

    def __init__(self, init_scale: float = 1.0, min_scale: float = 1e-3) -> None:
        super().__init__()
        if not init_scale > positive("min_scale", min_scale):
            raise ConfigError(f"init_scale must exceed min_scale, got {init_scale} <= {min_scale}")
        self.init_scale = init_scale
        self.min_scale = min_scale

    def setup(self, input_shape):
        super().setup(input_shape)
        raw = _inverse_softplus(self.init_scale - self.min_scale)
        self.raw_scale = nn.Parameter(torch.full(self.event_shape, raw))

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self, params):
        loc = self.only(params)
        return dist.Normal(loc, self.scale.expand(loc.shape), validate_args=False)


@register("gaussian_fixed")
class GaussianFixed(Likelihood):
    r"""Gaussian with a fixed, user-given scale: :math:`x_d \sim \mathcal N(\mu_d(z), \sigma^2)`.

    This is the likelihood behind the hand-weighted loss ``MSE + lambda * KL``. With
    :math:`D` features,

    .. math::
        -\mathrm{ELBO} = \frac{1}{2\sigma^2}\sum_d (x_d - \mu_d)^2 + \mathrm{KL}
                         + \tfrac{D}{2}\log(2\pi\sigma^2)
        = \frac{D}{2\sigma^2}\Big[\underbrace{\tfrac{1}{D}\textstyle\sum_d (x_d-\mu_d)^2}_{\text{MSE}}
          + \frac{2\sigma^2}{D}\,\mathrm{KL}\Big] + \text{const},

    so minimising ``MSE + lambda * KL`` (MSE averaged over the D features) is maximising
    this ELBO with :math:`\sigma^2 = D\lambda/2`: the same optimum and, up to the positive
    factor :math:`D/(2\sigma^2)`, the same gradients. A hand-tuned lambda is a hand-tuned
    noise level; ``gaussian`` and ``gaussian_shared`` learn it instead.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = positive("scale", scale)

    def forward(self, params):
        loc = self.only(params)
        return dist.Normal(loc, torch.full_like(loc, self.scale), validate_args=False)


@register("gaussian_optimal")
class GaussianOptimal(Likelihood):
    r"""The calibrated decoder of the sigma-VAE (Rybkin, Daniilidis and Levine, 2021).

    One noise scale for all features, set in closed form to its maximum-likelihood value
    for the current batch: for fixed :math:`\mu(z)`, the Gaussian log-likelihood
    :math:`-\frac{1}{2\sigma^2}\sum_{n,d}(x_{nd}-\mu_{nd})^2 - ND\log\sigma` is largest at

    .. math::
        \sigma^{*2} = \frac{1}{ND}\sum_{n,d} (x_{nd} - \mu_{nd}(z_n))^2,

    the batch's mean squared error. :math:`\sigma^*` enters the ELBO as a constant (no
    gradient flows through it) and :math:`\log\sigma^*` is kept above ``min_log_scale``,
    so a perfectly reconstructed batch cannot make the density infinite. In training mode
    each batch sets :math:`\sigma^*` and updates a running average of :math:`\sigma^{*2}`
    (``momentum``); in evaluation mode, and in :meth:`forward` (decoding, sampling), that
    running value is the fixed noise level, so held-out log-likelihoods use a scale fitted
    on training data, never on the test batch itself.
    """

    def __init__(self, min_log_scale: float = -6.0, momentum: float = 0.1) -> None:
        super().__init__()
        if not math.isfinite(min_log_scale):
            raise ConfigError(f"min_log_scale must be a finite number, got {min_log_scale}")
        if not 0 < momentum <= 1:
            raise ConfigError(f"momentum must lie in (0, 1], got {momentum}")
        self.min_log_scale = float(min_log_scale)
        self.momentum = float(momentum)

    def setup(self, input_shape):
        super().setup(input_shape)
        self.register_buffer("running_variance", torch.ones(()))

    def _clamp(self, variance: torch.Tensor) -> torch.Tensor:
        return variance.clamp_min(math.exp(2 * self.min_log_scale)).sqrt()

    @property
    def scale(self) -> torch.Tensor:
        r"""The noise scale used outside training: the root of the running average of :math:`\sigma^{*2}`."""
        return self._clamp(self.running_variance)

    def batch_scale(self, loc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\sigma^*` for a batch: the root-mean-square error, floored, detached."""
        return self._clamp((x - loc).detach().pow(2).mean())

    def forward(self, params):
        loc = self.only(params)
        return dist.Normal(loc, self.scale.to(loc).expand(loc.shape), validate_args=False)

    def observation(self, params, x):
        if not self.training:
            return self(params)
        loc = self.only(params)
        scale = self.batch_scale(loc, x)
        with torch.no_grad():
            self.running_variance.lerp_(scale.pow(2), self.momentum)
        return dist.Normal(loc, scale.expand(loc.shape), validate_args=False)


class LowRankCells(dist.TorchDistribution):
    r"""A :class:`torch.distributions.LowRankMultivariateNormal` per data point, seen as its ``D`` cells.

    Batch shape ``(..., D)``, event shape ``()``, as the likelihood protocol wants: the
    point's log density is shared equally among its observed cells, so the cells' terms sum
    to it (the model's ``.to_event(1)`` and ``columns`` only ever sum them; a correlated
    Gaussian has no density per cell of its own).

    Masking is marginalising: :meth:`mask` with the observed cells ``m`` gives the density of
    :math:`x_m` alone, again a low-rank Gaussian with the rows of ``cov_factor`` and
    ``cov_diag`` of the other cells dropped. Those rows are set to ``0`` and ``1`` and their
    residuals to ``0`` instead (shapes stay fixed across points): each such cell then adds an
    independent standard normal's :math:`-\tfrac12\log 2\pi`, which is taken off again.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        cov_factor: torch.Tensor,
        cov_diag: torch.Tensor,
        observed: torch.Tensor | None = None,
    ) -> None:
        self.loc, self.cov_factor, self.cov_diag, self.observed = loc, cov_factor, cov_diag, observed
        super().__init__(loc.shape, torch.Size(), validate_args=False)

    def joint(self) -> torch.distributions.LowRankMultivariateNormal:
        """The distribution of all ``D`` cells of a point (event shape ``(D,)``)."""
        return torch.distributions.LowRankMultivariateNormal(
            self.loc, self.cov_factor, self.cov_diag, validate_args=False
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self.observed is None:
            return (self.joint().log_prob(value) / value.shape[-1]).unsqueeze(-1).expand(self.shape_of(value))
        shape = self.shape_of(value)
        seen = self.observed.expand(shape)
        marginal = torch.distributions.LowRankMultivariateNormal(
            torch.where(seen, self.loc, 0.0),
            self.cov_factor * seen.unsqueeze(-1),
            torch.where(seen, self.cov_diag, 1.0),
            validate_args=False,
        )
        hidden = (~seen).sum(-1)
        log_px = marginal.log_prob(torch.where(seen, value, 0.0)) + 0.5 * math.log(2 * math.pi) * hidden
        share = log_px / (shape[-1] - hidden).clamp(min=1)
        return torch.where(seen, share.unsqueeze(-1), 0.0)

    def shape_of(self, value: torch.Tensor) -> torch.Size:
        return torch.broadcast_shapes(value.shape, self.batch_shape)

    def mask(self, mask):
        """The marginal over the cells where ``mask`` is true (see the class docstring)."""
        if not isinstance(mask, torch.Tensor):
            return super().mask(mask)
        observed = mask if self.observed is None else self.observed & mask
        return LowRankCells(self.loc, self.cov_factor, self.cov_diag, observed)

    def given(self, value: torch.Tensor, observed: torch.Tensor) -> LowRankCells:
        r"""The cells given the ``observed`` ones of ``value``: low rank plus diagonal again.

        With :math:`x = \mu + W u + \sigma \odot \varepsilon`, the observed cells give
        :math:`u \mid x_o \sim \mathcal N(m, S)`, :math:`S = (I + W_o^\top \Psi_o^{-1} W_o)^{-1}`,
        :math:`m = S\, W_o^\top \Psi_o^{-1} (x_o - \mu_o)`, so
        :math:`x \mid x_o \sim \mathcal N(\mu + W m,\ (W L)(W L)^\top + \Psi)` with :math:`S = L L^\top`:
        for the missing cells, the Gaussian conditional
        :math:`\mu_m + \Sigma_{mo}\Sigma_{oo}^{-1}(x_o - \mu_o)`, in :math:`O(D r^2)`.
        """
        shape = self.shape_of(value)
        seen = observed.expand(shape)
        factor = self.cov_factor.expand(*shape, self.cov_factor.shape[-1])
        eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
        weighted = (factor * torch.where(seen, 1 / self.cov_diag, 0.0).unsqueeze(-1)).mT  # W_o^T Psi_o^-1
        chol = torch.linalg.cholesky(eye + weighted @ factor)  # S^-1 = C C^T
        residual = torch.where(seen, value - self.loc, 0.0).unsqueeze(-1)
        m = torch.cholesky_solve(weighted @ residual, chol)
        root = torch.linalg.solve_triangular(chol.mT, eye.expand_as(chol), upper=True)  # C^-T: S = C^-T C^-1
        loc = self.loc + (factor @ m).squeeze(-1)
        return LowRankCells(loc, factor @ root, self.cov_diag.expand(shape))

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self.joint().rsample(torch.Size(sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.cov_factor.pow(2).sum(-1) + self.cov_diag

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        observed = None if self.observed is None else self.observed.expand(batch_shape)
        return LowRankCells(
            self.loc.expand(batch_shape),
            self.cov_factor.expand(*batch_shape, self.cov_factor.shape[-1]),
            self.cov_diag.expand(batch_shape),
            observed,
        )


@register("gaussian_lowrank")
class GaussianLowRank(Likelihood):
    r"""Gaussian noise correlated across features: low rank plus diagonal, both from the decoder.

    .. math::
        x \mid z \sim \mathcal N\big(\mu(z),\; W(z) W(z)^\top + \operatorname{diag}\sigma(z)^2\big),
        \qquad W(z) \in \mathbb R^{D \times r},\quad \sigma_d = \operatorname{softplus}(h_d) + \sigma_{\min},

    that is :math:`x = \mu(z) + W(z)\,u + \sigma(z) \odot \varepsilon` with
    :math:`u \sim \mathcal N(0, I_r)` and :math:`\varepsilon \sim \mathcal N(0, I_D)`: ``rank``
    directions of noise shared by the features. Near-deterministic relations between columns
    (a radius, its perimeter and its area) fit into :math:`W` instead of forcing ``z`` to carry
    them and a diagonal decoder to pay :math:`\sigma(z)` on every column. Its log density is
    :class:`torch.distributions.LowRankMultivariateNormal`'s (Woodbury identity and matrix
    determinant lemma: :math:`O(D r^2)` per point); :math:`\sigma_{\min}` keeps the
    covariance positive definite whatever :math:`W` is.

    The decoder gives :math:`2 + r` outputs per feature: :math:`\mu_d`, :math:`h_d` and row
    :math:`d` of :math:`W`. Missing cells are marginalised exactly (the marginal of the
    observed cells drops the rows of :math:`W` and :math:`\sigma` of the missing ones).
    Vectors only. Inside ``columns`` the columns given ``gaussian_lowrank`` form one block
    with one covariance.
    """

    def __init__(self, rank: int = 2, min_scale: float = 1e-3) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"rank must be an integer >= 1, got {rank!r}")
        self.rank = rank
        self.min_scale = positive("min_scale", min_scale)
        self.num_params = 2 + rank

    def setup(self, input_shape):
        super().setup(input_shape)
        if len(self.event_shape) != 1:
            raise ConfigError(
                f"gaussian_lowrank models vectors, not data points of shape {self.event_shape}: "
                "flatten them, or use 'gaussian'"
            )

    def forward(self, params):
        loc, raw_scale, *rows = self.unbind(params)
        scale = F.softplus(raw_scale) + self.min_scale
        return LowRankCells(loc, torch.stack(rows, -1), scale.pow(2))

    def given(self, d, x, observed):
        return d.given(x, observed)


# --------------------------------------------------------------------------- data in [0, 1]


class BernoulliLogits(dist.Bernoulli):
    r"""Pyro's Bernoulli with ``log_prob`` written as :math:`x\,\ell - \operatorname{softplus}(\ell)`.

    That is :math:`\log \sigma(\ell)^x (1-\sigma(\ell))^{1-x}`, the value torch computes
    with its ``binary_cross_entropy_with_logits`` kernel, which on CPU is slower than
    ``softplus`` plus one multiply-add, most of all when one data point is broadcast
    against K posterior draws as in importance-sampled evaluation (side by side in
    ``benchmarks/eval_speed.py``, ``bernoulli_log_prob`` in its results).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if torch.is_grad_enabled():
            return value * logits - F.softplus(logits)
        return F.softplus(logits).neg_().addcmul_(value, logits)  # in place: no temporaries without autograd


class BinaryLogits(BernoulliLogits):
    r"""The Bernoulli of binary data: :math:`\log p(x) = \log\sigma\big((2x - 1)\,\ell\big)`.

    For :math:`x \in \{0, 1\}` the same value as :math:`x\,\ell - \operatorname{softplus}(\ell)`
    in one fused kernel over the logits instead of two passes: importance-sampled evaluation
    spends most of its time outside the matrix products on this sum over K x 784 logits
    (``benchmarks/eval_speed.py``). Only for data in {0, 1}, which ``bernoulli`` (strict) checks.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid((2 * value - 1) * self.logits)


@register("bernoulli")
class Bernoulli(Likelihood):
    r"""Bernoulli with logits from the decoder, for binary data.

    ``strict=False`` also accepts grey levels in [0, 1] and scores them with the
    cross-entropy formula :math:`x\log p + (1-x)\log(1-p)`. That is *not* a normalised
    density on [0, 1] (Loaiza-Ganem and Cunningham, 2019): its numbers are not
    log-likelihoods and cannot be compared with other models. Use
    ``continuous_bernoulli`` for such data.
    """

    support = BINARY
    discrete = True

    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict
        if not strict:
            self.support = UNIT_INTERVAL
            self.discrete = False

    def forward(self, params):
        family = BinaryLogits if self.strict else BernoulliLogits
        return family(logits=self.only(params), validate_args=False)


@register("continuous_bernoulli")
class ContinuousBernoulli(Likelihood):
    r"""Continuous Bernoulli (Loaiza-Ganem and Cunningham, 2019) on [0, 1].

    :math:`p(x \mid \lambda) = C(\lambda)\,\lambda^x (1-\lambda)^{1-x}`, the Bernoulli
    cross-entropy *plus* its normalising constant :math:`\log C(\lambda)`, so that it is a
    proper density for grey levels.
    """

    support = UNIT_INTERVAL

    def forward(self, params):
        return dist.ContinuousBernoulli(logits=self.only(params), validate_args=False)


@register("beta")
class Beta(Likelihood):
    r"""Beta distribution on the open interval (0, 1); both concentrations from the decoder.

    Exact 0s and 1s have zero density: dequantize such data first.
    """

    num_params = 2
    support = OPEN_UNIT_INTERVAL

    def __init__(self, min_concentration: float = 1e-2) -> None:
        super().__init__()
        self.min_concentration = positive("min_concentration", min_concentration)

    def forward(self, params):
        c1, c0 = (F.softplus(p) + self.min_concentration for p in self.unbind(params))
        return dist.Beta(c1, c0, validate_args=False)


# --------------------------------------------------------------------------- heavy tails


@register("laplace")
class Laplace(LocationScale):
    r"""Laplace :math:`x_d \sim \mathrm{Laplace}(\mu_d(z), b_d(z))`: an L1 reconstruction with a learned scale."""

    family = dist.Laplace


@register("student_t")
class StudentT(Likelihood):
    r"""Student-t with location and scale from the decoder; robust to outliers.

    ``df=None`` learns one degrees-of-freedom parameter per feature (initialised at 4,
    kept above 1 so the mean exists); a number fixes it.
    """

    num_params = 2

    def __init__(self, df: float | None = None, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.df = None if df is None else positive("df", df)
        self.min_scale = positive("min_scale", min_scale)

    def setup(self, input_shape):
        super().setup(input_shape)
        if self.df is None:
            self.raw_df = nn.Parameter(torch.full(self.event_shape, _inverse_softplus(3.0)))

    def degrees_of_freedom(self) -> torch.Tensor:
        if self.df is None:
            return F.softplus(self.raw_df) + 1.0
        return torch.tensor(float(self.df))

    def forward(self, params):
        loc, raw_scale = self.unbind(params)
        df = self.degrees_of_freedom().to(loc).expand(loc.shape)
        return dist.StudentT(df, loc, F.softplus(raw_scale) + self.min_scale, validate_args=False)

    def mean(self, d):
        return d.loc


# --------------------------------------------------------------------------- counts


class Counts(Likelihood):
    """Base for likelihoods of counts: non-negative integers."""

    support = NONNEGATIVE_INTEGER
    discrete = True


@register("poisson")
class Poisson(Counts):
    r"""Poisson counts with rate :math:`\operatorname{softplus}(h(z))`."""

    def __init__(self, min_rate: float = 1e-6) -> None:
        super().__init__()
        self.min_rate = positive("min_rate", min_rate)

    def forward(self, params):
        return dist.Poisson(F.softplus(self.only(params)) + self.min_rate, validate_args=False)


@register("negative_binomial")
class NegativeBinomial(Counts):
    r"""Negative binomial counts; the decoder outputs the total count (dispersion) and the logits.

    Mean :math:`r e^{\ell}`, variance :math:`\text{mean}\,(1 + e^{\ell})`: over-dispersed
    relative to a Poisson of the same mean.
    """

    num_params = 2

    def __init__(self, min_total_count: float = 1e-3) -> None:
        super().__init__()
        self.min_total_count = positive("min_total_count", min_total_count)

    def forward(self, params):
        raw_count, logits = self.unbind(params)
        total_count = F.softplus(raw_count) + self.min_total_count
        return dist.NegativeBinomial(total_count, logits=logits, validate_args=False)


def _log_diff_ndtr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(\Phi(b) - \Phi(a))` for :math:`a < b`, accurate in both tails (on the upper
    tail through :math:`\Phi(b) - \Phi(a) = \Phi(-a) - \Phi(-b)`)."""
    upper = a > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    d = (log_a - log_b).clamp(max=-1e-12)  # < 0: the log of a ratio below 1
    return log_b + torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


class DiscretizedNormal(dist.TorchDistribution):
    r"""A normal distribution rounded to the nearest integer:
    :math:`P(x) = \Phi(\tfrac{x + 1/2 - \mu}{\sigma}) - \Phi(\tfrac{x - 1/2 - \mu}{\sigma})`."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.integer_interval(-(2**53), 2**53)

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def log_prob(self, value):
        return _log_diff_ndtr((value - 0.5 - self.loc) / self.scale, (value + 0.5 - self.loc) / self.scale)

    def sample(self, sample_shape=()):
        shape = self.shape(torch.Size(sample_shape))
        with torch.no_grad():
            return torch.normal(self.loc.expand(shape), self.scale.expand(shape)).round()

    @property
    def mean(self):
        return self.loc

    def expand(self, batch_shape, _instance=None):
        return DiscretizedNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape))


@register("discretized_gaussian")
class DiscretizedGaussian(Likelihood):
    r"""Integers on a scale (an age in years, a cholesterol level): a Gaussian rounded to the
    nearest integer, :math:`P(x \mid z) = \Phi(\tfrac{x + 1/2 - \mu}{\sigma}) - \Phi(\tfrac{x - 1/2 - \mu}{\sigma})`,
    with :math:`\mu = c + s\,h_1(z)` and :math:`\sigma = s\,(\operatorname{softplus}(h_2) + \sigma_{\min})`.

    The data stay in their own units (a probability needs no Jacobian); ``center`` and
    ``spread`` (the column's training mean and standard deviation, which tables set) put the
    decoder's outputs on the data's scale. Unlike the negative binomial it can be narrower
    than a Poisson of the same mean, and it has no preferred origin.
    """

    num_params = 2
    support = INTEGER
    discrete = True

    def __init__(self, center: float = 0.0, spread: float = 1.0, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.center = float(center)
        self.spread = positive("spread", spread)
        self.min_scale = positive("min_scale", min_scale)

    def forward(self, params):
        loc, raw_scale = self.unbind(params)
        scale = self.spread * (F.softplus(raw_scale) + self.min_scale)
        return DiscretizedNormal(self.center + self.spread * loc, scale)


# --------------------------------------------------------------------------- point masses


class PointMassMixture(dist.TorchDistribution):
    r"""Atoms :math:`a_1 < \dots < a_K` with probabilities :math:`\pi_1..\pi_K` and, with
    :math:`\pi_0`, a continuous ``density``: batch shape ``(..., n)``, event shape ``()``.

    ``logits`` is ``(..., n, K + 1)``, the atoms' first and the density's last. Its log_prob
    is taken against counting measure on the atoms plus Lebesgue measure: :math:`\log \pi_k`
    at :math:`x = a_k` (a probability) and :math:`\log \pi_0 + \log f(x)` elsewhere (a
    density). The density puts no mass on the atoms, so the two parts never overlap and
    :math:`\sum_k \pi_k + \pi_0 \int f = 1`.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real

    def __init__(self, atoms: torch.Tensor, logits: torch.Tensor, density: dist.Distribution) -> None:
        self.atoms, self.logits, self.density = atoms, logits, density
        batch = torch.broadcast_shapes(logits.shape[:-1], density.batch_shape)
        super().__init__(batch, torch.Size(), validate_args=False)

    @property
    def log_weights(self) -> torch.Tensor:
        """:math:`\\log \\pi`, ``(..., n, K + 1)``: the atoms' then the density's."""
        return self.logits.log_softmax(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        hit = value.unsqueeze(-1) == self.atoms.to(value.dtype)  # exact: the atoms are the data's own values
        log_w = self.log_weights
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        which = hit.to(torch.uint8).argmax(-1, keepdim=True).expand(*shape, 1)
        on_atom = log_w[..., :-1].expand(*shape, len(self.atoms)).gather(-1, which).squeeze(-1)
        off_atom = log_w[..., -1] + self.density.log_prob(value)
        return torch.where(hit.any(-1), on_atom, off_atom)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            part = dist.Categorical(logits=self.logits).expand(self.batch_shape).sample(shape)
            continuous = self.density.expand(self.batch_shape).sample(shape)
            atom = self.atoms.to(continuous)[part.clamp(max=len(self.atoms) - 1)]
            return torch.where(part == len(self.atoms), continuous, atom)

    @property
    def mean(self) -> torch.Tensor:
        w = self.log_weights.exp()
        return (w[..., :-1] * self.atoms.to(w)).sum(-1) + w[..., -1] * self.density.mean

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        logits = self.logits.expand(*batch_shape, self.logits.shape[-1])
        return PointMassMixture(self.atoms, logits, self.density.expand(batch_shape))


@register("point_masses")
class PointMasses(Likelihood):
    r"""A real column where a few values hold many rows (zero-inflated amounts, a clipped
    sensor, a ratio of small integers): those ``atoms`` and a Gaussian, mixed by the decoder.

    .. math::
        p(x \mid z) = \sum_{k=1}^{K} \pi_k(z)\,[x = a_k] + \pi_0(z)\,
        \mathcal N\big(x;\ c + s\,\mu(z),\ (s\,\sigma(z))^2\big),
        \qquad \pi(z) = \operatorname{softmax}(h(z)) \in \Delta^{K},

    with :math:`\sigma = \operatorname{softplus}(h_\sigma) + \sigma_{\min}`. At an atom its
    log_prob is :math:`\log \pi_k` (a probability), elsewhere :math:`\log \pi_0 + \log \mathcal N`
    (a density per unit of the data): a Gaussian alone would have to spend its width on the
    spikes, or grow without bound on them. The data stay in their own units, as for
    ``discretized_gaussian``; ``center`` and ``spread`` (the column's training mean and
    standard deviation, which tables set) put the decoder's outputs on the data's scale. The
    decoder gives :math:`K + 3` outputs per feature: :math:`K + 1` logits, :math:`\mu` and
    :math:`h_\sigma`. The default, one atom at 0, is a zero-inflated Gaussian.
    """

    support = REAL

    def __init__(
        self,
        atoms: list[float] | tuple[float, ...] = (0.0,),
        center: float = 0.0,
        spread: float = 1.0,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        atoms = [float(a) for a in atoms] if isinstance(atoms, (list, tuple)) else atoms
        if (
            not isinstance(atoms, list)
            or not atoms
            or not all(math.isfinite(a) for a in atoms)
            or any(b <= a for a, b in zip(atoms, atoms[1:]))
        ):
            raise ConfigError(f"atoms must be a non-empty list of finite, increasing numbers, got {atoms!r}")
        if not math.isfinite(center):
            raise ConfigError(f"center must be a finite number, got {center!r}")
        self.atoms = atoms
        self.center = float(center)
        self.spread = positive("spread", spread)
        self.min_scale = positive("min_scale", min_scale)
        self.num_params = len(atoms) + 3
        self.register_buffer("atom_values", torch.tensor(atoms), persistent=False)

    def forward(self, params):
        *logits, loc, raw_scale = self.unbind(params)
        density = dist.Normal(
            self.center + self.spread * loc,
            self.spread * (F.softplus(raw_scale) + self.min_scale),
            validate_args=False,
        )
        return PointMassMixture(self.atom_values.to(loc.device), torch.stack(logits, -1), density)


# --------------------------------------------------------------------------- categories and tables


@register("categorical")
class Categorical(Likelihood):
    r"""Categorical over ``num_categories`` levels coded 0, 1, ..., K-1; the decoder gives the logits.

    :math:`p(x = k \mid z) = \operatorname{softmax}(h(z))_k`, so ``num_params`` is K. The
    reconstruction shown (:meth:`mean`) is the most probable level. The imputed value is
    that level too, unless the levels stand for ``values`` (numbers in increasing order, as
    for a table's few-valued numeric column): then it is the conditional mean
    :math:`\sum_k \bar p_k v_k`, given as the fractional code that interpolates to it
    (:meth:`pyro_vae.data.tables.TableSchema.to_raw` maps codes back to numbers by that interpolation).
    """

    discrete = True

    def __init__(self, num_categories: int, values: list[float] | None = None) -> None:
        super().__init__()
        if isinstance(num_categories, bool) or not isinstance(num_categories, int) or num_categories < 2:
            raise ConfigError(f"num_categories must be an integer >= 2, got {num_categories!r}")
        if values is not None:
            values = [float(v) for v in values]
            if len(values) != num_categories or any(b <= a for a, b in zip(values, values[1:])):
                raise ConfigError(f"values must be {num_categories} increasing numbers, got {values!r}")
        self.num_categories = num_categories
        self.values = values
        self.num_params = num_categories
        self.support = categories(num_categories)

    def forward(self, params):
        return dist.Categorical(logits=params.movedim(self.param_dim, -1), validate_args=False)

    def mean(self, d):
        return d.probs.argmax(-1).to(d.probs.dtype)

    def weighted_mean(self, d, weights):
        probs = (weights.reshape(*weights.shape, *[1] * (d.probs.dim() - 2)) * d.probs).sum(0)
        if self.values is None:
            return probs.argmax(-1).to(probs.dtype)
        values = torch.tensor(self.values, dtype=probs.dtype, device=probs.device)
        expected = (probs * values).sum(-1)
        upper = torch.searchsorted(values, expected.contiguous()).clamp(1, len(values) - 1)
        low, high = values[upper - 1], values[upper]
        return (upper - 1).to(probs.dtype) + (expected - low) / (high - low)


class ColumnsDistribution(dist.TorchDistribution):
    """Independent columns, each from its own family: batch shape ``(..., D)``, event shape ``()``.

    ``parts`` pairs the column indices of a group with the distribution of those columns
    (batch ``(..., len(indices))``); ``log_prob`` puts each column's term at its place.
    """

    arg_constraints: ClassVar[dict] = {}

    def __init__(self, parts: list[tuple[torch.Tensor, dist.Distribution]], order: torch.Tensor) -> None:
        self.parts, self.order = parts, order
        lead = torch.broadcast_shapes(*(d.batch_shape[:-1] for _, d in parts))
        super().__init__(torch.Size((*lead, len(order))), torch.Size(), validate_args=False)

    def _gather(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Per-group tensors ``(..., n_g)`` as one ``(..., D)`` in column order (codes as floats)."""
        pieces = [p if p.is_floating_point() else p.float() for p in pieces]
        lead = torch.broadcast_shapes(*(p.shape[:-1] for p in pieces))
        return torch.cat([p.expand(*lead, p.shape[-1]) for p in pieces], -1)[..., self.order]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._gather([d.log_prob(value[..., idx]) for idx, d in self.parts])

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self._gather([d.sample(torch.Size(sample_shape)) for _, d in self.parts])

    @property
    def mean(self) -> torch.Tensor:
        return self._gather([d.mean for _, d in self.parts])

    def mask(self, mask):
        """Each group masked by its own columns of a per-cell ``mask``: a ``gaussian_lowrank``
        block marginalises its missing cells, where masking each cell's term alone would not."""
        if not isinstance(mask, torch.Tensor) or mask.dim() == 0 or mask.shape[-1] != len(self.order):
            return super().mask(mask)
        return ColumnsDistribution([(i, d.mask(mask[..., i])) for i, d in self.parts], self.order)

    def expand(self, batch_shape, _instance=None):
        lead = tuple(batch_shape)[:-1]
        return ColumnsDistribution([(i, d.expand((*lead, len(i)))) for i, d in self.parts], self.order)


@register("columns")
class Columns(Likelihood):
    r"""A likelihood per column of a table: :math:`p(x \mid z) = \prod_d p_d(x_d \mid z)`.

    ``columns`` gives each column's likelihood (a name or a ``{"name", "options"}`` spec): a
    list of ``D`` entries, or a dict keyed by column index or by a name from ``names``
    covering every column. Columns with the same spec share one vectorised sub-likelihood;
    the decoder outputs ``(..., max num_params, D)`` and column ``d`` reads the first
    ``num_params`` rows of its slice (a K-level categorical reads K). Still one observation
    site: its ``log_prob`` is the sum over columns, and Pyro's ELBO derives the loss.
    """

    def __init__(self, columns: list | dict, names: list[str] | None = None) -> None:
        super().__init__()
        self.names = None if names is None else [str(n) for n in names]
        self.columns = _column_specs(columns, self.names)
        groups: dict[str, list[int]] = {}
        for d, spec in enumerate(self.columns):
            groups.setdefault(json.dumps(spec, sort_keys=True), []).append(d)
        self.parts = nn.ModuleList(create(self.columns[idx[0]]) for idx in groups.values())
        self.indices = [torch.tensor(idx) for idx in groups.values()]
        self.num_params = max(p.num_params for p in self.parts)
        self.discrete = all(p.discrete for p in self.parts)
        self.register_buffer("order", torch.argsort(torch.cat(self.indices)), persistent=False)

    def setup(self, input_shape):
        super().setup(input_shape)
        if self.event_shape != (len(self.columns),):
            raise DataError(
                f"{len(self.columns)} column likelihoods for data points of shape {self.event_shape}"
            )
        for part, idx in zip(self.parts, self.indices):
            part.setup(len(idx))

    def forward(self, params):
        order = self.order.to(params.device)
        return ColumnsDistribution(
            [
                (i.to(params.device), p(params[..., : p.num_params, i]))
                for p, i in zip(self.parts, self.indices)
            ],
            order,
        )

    def _by_part(self, d: ColumnsDistribution, f) -> torch.Tensor:
        return d._gather([f(part, sub) for part, (_, sub) in zip(self.parts, d.parts)])

    def mean(self, d):
        return self._by_part(d, lambda part, sub: part.mean(sub))

    def weighted_mean(self, d, weights):
        return self._by_part(d, lambda part, sub: part.weighted_mean(sub, weights))

    def given(self, d, x, observed):
        parts = [
            (i, part.given(sub, x[..., i], observed[..., i])) for part, (i, sub) in zip(self.parts, d.parts)
        ]
        return ColumnsDistribution(parts, d.order)

    def placeholder(self, x):
        out = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
        for part, idx in zip(self.parts, self.indices):
            out[idx] = part.support.placeholder
        return out

    def check_data(self, x):
        for part, idx in zip(self.parts, self.indices):
            for d in idx.tolist():
                try:
                    part.check_data(x[:, d])
                except DataError as e:
                    raise DataError(f"column {self._column_name(d)}: {e}") from None

    def _column_name(self, d: int) -> str:
        return f"{d} {self.names[d]!r}" if self.names else str(d)

    def extra_repr(self) -> str:
        return f"{len(self.columns)} columns: " + ", ".join(p.name for p in self.parts)


def _column_specs(columns: list | dict, names: list[str] | None) -> list[Any]:
    """The per-column specs as a list, from a list or a dict keyed by index or name."""
    if isinstance(columns, dict):
        where = {n: i for i, n in enumerate(names or [])}
        size = len(names) if names else len(columns)
        specs: list[Any] = [None] * size
        for key, spec in columns.items():
            d = where.get(key, where.get(str(key)))
            if d is None:
                d = int(key) if str(key).lstrip("-").isdigit() else None
            if d is None or not 0 <= d < size:
                known = f"names {names}" if names else f"indices 0..{size - 1}"
                raise ConfigError(f"column {key!r} is not in the table (columns go by {known})")
            specs[d] = spec
        missing = [i for i, s in enumerate(specs) if s is None]
        if missing:
            raise ConfigError(f"no likelihood given for columns {missing}: give one for every column")
        columns = specs
    if not isinstance(columns, (list, tuple)) or not columns:
        raise ConfigError(f"columns must be a non-empty list or dict of likelihood specs, got {columns!r}")
    if names is not None and len(names) != len(columns):
        raise ConfigError(f"{len(names)} names for {len(columns)} columns")
    out = []
    for spec in columns:
        if (
            isinstance(spec, str)
            and spec in ("auto", "columns")
            or isinstance(spec, dict)
            and spec.get("name") == "columns"
        ):
            raise ConfigError(f"a column's likelihood must be a named family, got {spec!r}")
        create(spec)  # a clear error for an unknown name or bad options
        out.append(
            spec
            if isinstance(spec, str)
            else {"name": spec["name"], "options": dict(spec.get("options", {}))}
        )
    return out


def choose_auto(data: Any, vector: bool = True) -> tuple[Any, str]:
    """The likelihood ``"auto"`` gives ``data`` and why: a table's splits per column as
    ``splits.columns`` chose, otherwise from the training data's support (per column for vectors
    of mixed kinds)."""
    if getattr(data, "columns", None) is not None:
        return data.columns.likelihood_spec(), "chosen for each column of the table from its values"
    x = getattr(data, "train", data)
    spec, reason = choose_columns(x) if vector and isinstance(x, torch.Tensor) else (None, "")
    return (spec, reason) if spec is not None else choose_likelihood(x)
