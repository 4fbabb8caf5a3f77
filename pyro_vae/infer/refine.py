r"""Semi-amortized inference: a few SVI steps per data point on the guide's per-point parameters.

The encoder gives each point its Gaussian :math:`(\mu_\phi(x), \sigma_\phi(x))`, and the guide
(:mod:`pyro_vae.distributions.guides`) makes :math:`q(z \mid x)` of it. Amortization costs something: one
network must serve every point, and the gap :math:`\log p(x) - \text{ELBO}` holds an
*amortization gap* beside the family's own (Cremer et al. 2018). Kim et al. (2018) start from
the encoder's output and take a few gradient steps on the ELBO of each point separately:

.. math::
    \lambda_n^{(0)} = (\mu_\phi(x_n), \sigma_\phi(x_n)), \qquad
    \lambda_n^{(t+1)} = \lambda_n^{(t)} + \text{Adam}\big(\nabla_{\lambda_n}
    \text{ELBO}(x_n; \lambda_n^{(t)})\big).

:func:`refine` does that with Pyro's own machinery: ``pyro.infer.SVI`` with ``Trace_ELBO`` on
the VAE's model and a guide whose per-point location and scale are ``pyro.param`` s (the
networks, the prior's and the guide's own parameters stay as trained; a private parameter
store scope leaves the user's alone), optimised by ``pyro.optim.Adam``. The points are
independent terms of one ELBO, so one SVI step over a batch is one step per point.
:func:`evaluate_refined` reports the importance-sampled :math:`\log p(x)` and the ELBO of
the refined guide beside the amortized ones, on the same points, with their paired
difference.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import constraints

from pyro_vae.data import evaluation_data
from pyro_vae.infer.evaluation import chunk_plan, default_chunk_size, evaluate, point_batches, sampling
from pyro_vae.model import VAE
from pyro_vae.utils import positive, positive_int

#: Points refined together (one SVI problem; each point's parameters are its own).
REFINE_POINTS = 256


class Refined(NamedTuple):
    """The refined per-point parameters of the guide and the ELBO per SVI step.

    ``loc`` and ``scale`` are ``(n, latent_dim)``: ``vae.variational(loc, scale)`` is the
    refined :math:`q(z \\mid x)`; ``elbo`` holds the mean ELBO per point before each step
    and after the last (``steps + 1`` values, single-draw estimates).
    """

    loc: torch.Tensor
    scale: torch.Tensor
    elbo: list[float]


def refine(
    vae: VAE, x: torch.Tensor, steps: int = 20, *, lr: float = 0.05, num_particles: int = 1
) -> Refined:
    """``steps`` SVI steps on each point's guide parameters, from the encoder's.

    Args:
        vae: a trained VAE (left in the mode it was in; its weights are not changed).
        x: a batch of data points, any shape the VAE accepts (NaN for missing cells where
            the VAE was built for them).
        steps: SVI steps (0: the encoder's parameters as they are).
        lr: Adam's learning rate.
        num_particles: draws per point and step in the ELBO's gradient.

    Returns:
        The refined :class:`Refined` parameters.
    """
    positive_int("steps", steps, minimum=0)
    positive("lr", lr)
    vae.check_data(x)
    with torch.no_grad():
        loc0, scale0 = vae.encoder(vae.shaped(x))
    model = poutine.block(vae.model, hide_types=["param"])  # the decoder and prior stay as trained
    n = x.shape[0]

    def guide(x: torch.Tensor) -> None:
        loc = pyro.param("refined_loc", loc0.clone())
        scale = pyro.param("refined_scale", scale0.clone(), constraint=constraints.positive)
        with pyro.plate("data", n, dim=-1):
            pyro.sample("z", vae.variational(loc, scale))

    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)
    history: list[float] = []
    with pyro.get_param_store().scope(), _frozen(vae):
        svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
        for _ in range(steps):
            history.append(-svi.step(x) / n)
        history.append(-svi.evaluate_loss(x) / n)
        loc = pyro.param("refined_loc").detach()
        scale = pyro.param("refined_scale").detach()
    return Refined(loc, scale, history)


@contextlib.contextmanager
def _frozen(vae: VAE) -> Iterator[None]:
    """No gradients into the VAE's own weights while refining: only the per-point parameters move."""
    params = [p for p in vae.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@torch.no_grad()
def _scores(
    vae: VAE, x: torch.Tensor, refined: Refined, num_samples: int, draws: int
) -> tuple[torch.Tensor, ...]:
    """Per point: importance-sampled log p(x) and the ELBO of the refined guide, ``num_samples`` draws."""
    posterior = vae.variational(refined.loc, refined.scale)
    lse = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    remaining = num_samples
    while remaining > 0:
        k = min(draws, remaining)
        remaining -= k
        z = posterior.sample((k,))
        log_px_z, log_pz = vae.log_joint(z, x)  # the log-density seam
        log_w = (log_px_z + log_pz - posterior.log_prob(z)).double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        total += log_w.sum(0)
    return lse - math.log(num_samples), total / num_samples


def evaluate_refined(
    vae: VAE,
    data: Any,
    steps: int = 20,
    num_samples: int = 1000,
    *,
    lr: float = 0.05,
    seed: int = 0,
    split: str | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """The amortized and the refined guide on the same points, side by side.

    Args:
        vae: a trained VAE.
        data: what :func:`pyro_vae.evaluate` takes (a :class:`~pyro_vae.data.DataSplits`:
            its ``split``, default ``"test"``).
        steps: SVI steps per point (:func:`refine`).
        num_samples: importance samples per point for both figures.
        lr: Adam's learning rate for the refinement.
        seed: seeds the draws of both evaluations (the same as :func:`pyro_vae.evaluate`'s).
        split: the split of a ``DataSplits``.
        chunk_size: (sample, point) pairs per chunk (default: sized from the model).

    Returns:
        ``evaluate``'s result for the amortized guide, plus ``refine_steps``,
        ``log_likelihood_refined`` and ``elbo_refined`` (means over points, in nats, in the
        model's units), ``refined_minus_amortized`` and ``refined_minus_amortized_se`` (the
        paired difference in log p(x) and its standard error over points), ``elbo_gain``,
        and per point ``log_likelihood_refined`` and ``elbo_refined``.
    """
    positive_int("steps", steps, minimum=0)
    data, ldj = evaluation_data(data, split, None)
    result = evaluate(vae, data, num_samples, seed=seed, chunk_size=chunk_size, log_abs_det_jacobian=ldj)
    draws, _ = chunk_plan(num_samples, default_chunk_size(vae) if chunk_size is None else chunk_size)
    device = next(vae.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {"log_px": [], "elbo": []}
    with sampling(vae, seed, device):
        for x in point_batches(vae, data, REFINE_POINTS, device):
            refined = refine(vae, x, steps, lr=lr)
            log_px, elbo = _scores(vae, x, refined, num_samples, draws)
            parts["log_px"].append(log_px.cpu())
            parts["elbo"].append(elbo.cpu())
    log_px, elbo = torch.cat(parts["log_px"]), torch.cat(parts["elbo"])
    gain = log_px - result["pointwise"]["log_likelihood"].double()
    n = log_px.numel()
    result.update(
        refine_steps=steps,
        log_likelihood_refined=log_px.mean().item(),
        elbo_refined=elbo.mean().item(),
        refined_minus_amortized=gain.mean().item(),
        refined_minus_amortized_se=gain.std().item() / math.sqrt(n) if n > 1 else float("nan"),
        elbo_gain=elbo.mean().item() - result["elbo"],
    )
    result["pointwise"].update(log_likelihood_refined=log_px.float(), elbo_refined=elbo.float())
    return result
