r"""Objectives: Pyro's own ELBO classes, registered by name, and the KL weight ``beta``.

=================  ==============================================  ==========================
name               Pyro class                                      estimates
=================  ==============================================  ==========================
``elbo``           :class:`pyro.infer.Trace_ELBO`                  :math:`\mathbb E_q[\log p(x,z) - \log q(z|x)]`
``elbo_analytic``  :class:`pyro.infer.TraceMeanField_ELBO`         same, with the KL in closed form where one exists
``iwae``           :class:`pyro.infer.RenyiELBO` (``alpha=0``)     :math:`\mathbb E[\log \frac1K\sum_k w_k]`, tighter with K
=================  ==============================================  ==========================

Each objective is one small :class:`Objective` class registered by name (like the
likelihoods and priors), whose ``elbo(num_particles)`` builds the Pyro ELBO;
:func:`make_elbo` ``(name, num_particles)`` does both steps. Adding an objective is one
class and one test.

The training loop calls ``elbo.differentiable_loss(model, guide, x, beta)`` and steps a
plain ``torch.optim`` optimizer, the pattern Pyro documents for PyTorch training loops
(and the one DistributedDataParallel needs). Pyro's ``RenyiELBO`` only offers
``loss_and_grads``; :class:`RenyiELBO` below adds the missing ``differentiable_loss``
by the same computation as Pyro's ``RenyiELBO.loss``, kept differentiable, which is valid
for the reparameterised guides used here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro.infer
import torch
from pyro.infer.util import get_dependent_plate_dims, torch_sum

from pyro_vae.errors import ConfigError
from pyro_vae.registry import Registry, UnregisteredName, spec_of
from pyro_vae.utils import positive_int

# The model has one plate (the batch); vectorised particles go to the dimension left of it.
MAX_PLATE_NESTING = 1


class RenyiELBO(pyro.infer.RenyiELBO):
    r"""Pyro's Rényi :math:`\alpha` ELBO with a ``differentiable_loss``.

    .. math::
        \mathcal L_\alpha = \frac{1}{1-\alpha}\log \frac1K \sum_{k=1}^K w_k^{1-\alpha},
        \qquad w_k = \frac{p(x, z_k)}{q(z_k \mid x)}, \quad z_k \sim q(z \mid x),

    which for :math:`\alpha = 0` is the IWAE bound of Burda et al. (2015). Gradients flow
    through the reparameterised samples, so every guide site must have ``rsample``.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        log_weights = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            log_w = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_w = log_w + torch_sum(site["log_prob"], sum_dims)
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    if not site["fn"].has_rsample:
                        raise NotImplementedError(
                            f"RenyiELBO.differentiable_loss needs reparameterised guide sites; "
                            f"{site['name']!r} has none"
                        )
                    log_w = log_w - torch_sum(site["log_prob"], sum_dims)
            log_weights.append(log_w)
        if self.vectorize_particles and self.num_particles > 1:
            log_weights = log_weights[0]
        else:
            log_weights = torch.stack(log_weights)
        scaled = (1.0 - self.alpha) * log_weights
        log_mean_weight = torch.logsumexp(scaled, dim=0) - math.log(self.num_particles)
        return -log_mean_weight.sum() / (1.0 - self.alpha)


class Objective:
    """Protocol for objectives (subclass and :func:`register`): a recipe for a Pyro ELBO.

    :meth:`elbo` builds the Pyro ELBO with ``num_particles`` particles; pass it
    :func:`particles` ``(num_particles)``, the settings every objective shares (vectorised
    particles, the model's plate nesting). Constructor arguments are the objective's
    options, stored under the same attribute names (as for likelihoods and priors).
    """

    name: ClassVar[str] = UnregisteredName()  # type: ignore[assignment]
    #: which of :func:`~pyro_vae.infer.evaluation.validation_bounds` is this objective's own bound,
    #: the one training judges the weights by (early stopping, learning-rate reduction)
    bound: ClassVar[str] = "elbo"

    def elbo(self, num_particles: int = 1) -> pyro.infer.ELBO:
        raise NotImplementedError(f"objective {self.name!r} must define elbo(num_particles)")

    def validation_samples(self, num_particles: int, draws: int) -> int:
        """Draws of z per validation point for :meth:`validation_bound`: ``draws`` for an
        ELBO (every number estimates the same bound; more lower its variance)."""
        return draws

    def validation_bound(
        self, vae: Any, data: Any, *, num_particles: int = 1, draws: int = 1, seed: int = 0
    ) -> float:
        """The objective's own bound on the mean log p(x) of ``data``: what training judges by."""
        from pyro_vae.infer.evaluation import validation_bounds

        samples = self.validation_samples(num_particles, draws)
        return validation_bounds(vae, data, num_samples=samples, seed=seed)[self.bound]

    def spec(self) -> dict[str, Any]:
        return spec_of(self)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.spec()["options"].items())
        return f"{type(self).__name__}({options})"


REGISTRY: Registry[Objective] = Registry("objective", base=Objective)
register, create, names = REGISTRY.register, REGISTRY.create, REGISTRY.names


def particles(num_particles: int) -> dict[str, Any]:
    """The keyword arguments every Pyro ELBO here takes: ``num_particles``, vectorised when above 1."""
    positive_int("num_particles", num_particles)
    return dict(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=MAX_PLATE_NESTING,
    )


@register("elbo")
class TraceELBO(Objective):
    r"""The ELBO by Monte Carlo: :class:`pyro.infer.Trace_ELBO`.

    .. math::
        \mathcal L = \frac1K \sum_{k=1}^K \big[\log p(x \mid z_k) + \beta\,(\log p(z_k) - \log q(z_k \mid x))\big],
        \qquad z_k \sim q(z \mid x),

    unbiased for the ELBO at every K; more particles only lower the gradients' variance.
    """

    def elbo(self, num_particles=1):
        return pyro.infer.Trace_ELBO(**particles(num_particles))


@register("elbo_analytic")
class AnalyticKLELBO(Objective):
    r"""The ELBO with the KL in closed form: :class:`pyro.infer.TraceMeanField_ELBO`.

    .. math::
        \mathcal L = \frac1K \sum_{k=1}^K \log p(x \mid z_k) - \beta\,\mathrm{KL}\big(q(z \mid x)\,\|\,p(z)\big),

    with the KL analytic where torch knows it (Gaussian against the Gaussian priors) and
    by Monte Carlo otherwise: the same expectation as ``elbo``, with lower variance.
    """

    def elbo(self, num_particles=1):
        return pyro.infer.TraceMeanField_ELBO(**particles(num_particles))


@register("iwae")
class IWAE(Objective):
    r"""The importance-weighted bound (Burda et al. 2015): :class:`RenyiELBO` with :math:`\alpha = 0`.

    .. math::
        \mathcal L_K = \mathbb E\Big[\log \frac1K \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)}\Big]
        \le \log p(x),

    which tightens as K grows; with K = 1 it is the plain ELBO, so K >= 2 is required.
    Training judges it by the same bound with the same K on the validation data, not by
    the single-sample ELBO, which IWAE training is free to lower.
    """

    bound = "iwae"

    def validation_samples(self, num_particles, draws):
        return num_particles

    def elbo(self, num_particles=2):
        common = particles(num_particles)
        if num_particles < 2:
            raise ConfigError(
                f"loss='iwae' needs num_particles >= 2 (with 1 it is the plain ELBO), got {num_particles}; "
                "use num_particles=5 or more, or loss='elbo'"
            )
        return RenyiELBO(alpha=0.0, **common)


def make_elbo(loss: str | dict | Objective = "elbo", num_particles: int = 1) -> pyro.infer.ELBO:
    """The Pyro ELBO of the objective ``loss`` (a name, spec or instance) with ``num_particles`` particles."""
    positive_int("num_particles", num_particles)
    return create(loss).elbo(num_particles)


@dataclass(frozen=True)
class BetaSchedule:
    r"""The KL weight as a function of training progress (in epochs, fractional).

    ``beta(t) = start + (end - start) * min(1, t / warmup_epochs)``: a constant when
    ``warmup_epochs == 0``, otherwise a linear KL warm-up (Bowman et al. 2016;
    Sønderby et al. 2016). Only ``beta == 1`` maximises a bound on :math:`\log p(x)`;
    with ``beta != 1`` the objective is :math:`\mathbb E_q[\log p(x|z)] - \beta\,\mathrm{KL}`.
    """

    end: float = 1.0
    warmup_epochs: float = 0.0
    start: float = 0.0

    def __post_init__(self) -> None:
        for name in ("end", "start", "warmup_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"beta schedule {name} must be a finite number >= 0, got {value!r}")

    def __call__(self, epoch: float) -> float:
        if self.warmup_epochs <= 0:
            return float(self.end)
        frac = min(1.0, max(0.0, epoch / self.warmup_epochs))
        return float(self.start + (self.end - self.start) * frac)

    @classmethod
    def create(cls, spec: float | dict[str, Any] | BetaSchedule) -> BetaSchedule:
        """From a number (constant beta), a dict of the fields, or a schedule."""
        if isinstance(spec, BetaSchedule):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls(end=float(spec))
        if isinstance(spec, dict):
            unknown = set(spec) - {"end", "warmup_epochs", "start"}
            if unknown:
                raise ConfigError(
                    f"unknown beta schedule keys {sorted(unknown)}; use end, warmup_epochs, start"
                )
            return cls(**spec)
        raise ConfigError(f"beta must be a number, a dict or a BetaSchedule, got {spec!r}")

    def to_dict(self) -> dict[str, float]:
        return {"end": self.end, "warmup_epochs": self.warmup_epochs, "start": self.start}

    @classmethod
    def coerce(cls, value: Any, where: str) -> BetaSchedule:
        """As a typed setting: a number, a dict of the fields or a schedule; errors name ``where``."""
        from pyro_vae.errors import ConfigError

        if isinstance(value, str) or value is None:
            raise ConfigError(
                f"{where} must be a number or an object (end, warmup_epochs, start), got {value!r}"
            )
        try:
            return cls.create(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None


class ELBOLoss(torch.nn.Module):
    r"""The training objective of a VAE as a module: the negative ELBO per data point.

    ``forward(x, beta)`` returns ``elbo.differentiable_loss(vae.model, vae.guide, x, beta)
    / len(x)``. Being an ``nn.Module`` whose parameters are the VAE's, it is what
    ``DistributedDataParallel`` wraps; dividing by the batch size makes the average of
    the processes' gradients equal the gradient of one process holding all their data.

    For the plain one-particle ``Trace_ELBO`` of a VAE, each structure of the model is
    traced by Pyro once and then replayed (:mod:`pyro_vae.infer.replayed_elbo`): the same loss and
    gradients without building two traces per step. ``replay=False`` always uses Pyro's
    ELBO.
    """

    def __init__(self, vae: torch.nn.Module, elbo: pyro.infer.ELBO, *, replay: bool = True) -> None:
        from pyro_vae.infer.replayed_elbo import ReplayedELBO, replayable

        super().__init__()
        self.vae = vae
        self.elbo = elbo
        self.replayed = ReplayedELBO(vae) if replay and replayable(vae, elbo) is None else None

    def forward(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        loss = self.replayed(x, beta) if self.replayed is not None else None
        if loss is None:
            loss = self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x, beta)
        return loss / x.shape[0]
