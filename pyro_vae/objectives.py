r"""Objectives: Pyro's own ELBO classes, chosen by name, and the KL weight ``beta``.

================  ==============================================  ==========================
name              Pyro class                                      estimates
================  ==============================================  ==========================
``elbo``          :class:`pyro.infer.Trace_ELBO`                  :math:`\mathbb E_q[\log p(x,z) - \log q(z|x)]`
``elbo_analytic`` :class:`pyro.infer.TraceMeanField_ELBO`         same, with the KL in closed form where one exists
``iwae``          :class:`pyro.infer.RenyiELBO` (``alpha=0``)     :math:`\mathbb E[\log \frac1K\sum_k w_k]`, tighter with K
================  ==============================================  ==========================

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
from typing import Any

import pyro.infer
import torch
from pyro.infer.util import get_dependent_plate_dims, torch_sum

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


OBJECTIVES = ("elbo", "elbo_analytic", "iwae")


def make_elbo(loss: str = "elbo", num_particles: int = 1) -> pyro.infer.ELBO:
    """The Pyro ELBO called ``loss`` with ``num_particles`` vectorised particles."""
    positive_int("num_particles", num_particles)
    vectorize = num_particles > 1
    common = dict(
        num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=MAX_PLATE_NESTING
    )
    if loss == "elbo":
        return pyro.infer.Trace_ELBO(**common)
    if loss == "elbo_analytic":
        return pyro.infer.TraceMeanField_ELBO(**common)
    if loss == "iwae":
        if num_particles < 2:
            raise ValueError("loss='iwae' needs num_particles >= 2 (with 1 it is the plain ELBO)")
        return RenyiELBO(alpha=0.0, **common)
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(OBJECTIVES)}")


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
                raise ValueError(f"beta schedule {name} must be a finite number >= 0, got {value!r}")

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
                raise ValueError(
                    f"unknown beta schedule keys {sorted(unknown)}; use end, warmup_epochs, start"
                )
            return cls(**spec)
        raise ValueError(f"beta must be a number, a dict or a BetaSchedule, got {spec!r}")

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
    """

    def __init__(self, vae: torch.nn.Module, elbo: pyro.infer.ELBO) -> None:
        super().__init__()
        self.vae = vae
        self.elbo = elbo

    def forward(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x, beta) / x.shape[0]
