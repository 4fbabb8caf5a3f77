r"""The training step's ELBO, traced by Pyro once and then replayed without its handlers.

Pyro's :class:`~pyro.infer.Trace_ELBO` runs the guide under a trace handler, replays the
model against that trace and sums each site's scaled log-density. For a VAE the
structure it discovers is the same at every step: one reparameterised latent site ``"z"``
in both functions, scaled by ``beta``, and one observed site ``"x"``, inside the batch
plate. Building two traces per step for it (messages, plate broadcasting, scaling,
bookkeeping) costs about a fifth of a step of an MNIST-sized model
(``benchmarks/speed.py``).

:class:`ReplayedELBO` pays that once. The first time it sees a structure (data shape,
``beta`` being 1, 0 or another number, train or eval mode, missing cells or not) it has
Pyro trace the model and guide and checks what it finds: exactly those three sites,
the latent reparameterised, no other site, no handler around the call. It then
computes the same loss from the same distributions directly (the VAE defines them once,
in :meth:`~pyro_vae.model.VAE.posterior`, ``prior()`` and
:meth:`~pyro_vae.model.VAE.observation`) and compares it with Pyro's value at the same
random draws. Only if both checks pass does it replay that structure from then on:

.. math::
    -\big[\beta \log p(z) + \log p_\theta(x \mid z) - \beta \log q_\phi(z \mid x)\big],
    \qquad z = \mu_\phi(x) + \sigma_\phi(x)\,\epsilon,

summed over the batch, in the order Pyro sums it. Anything else (another objective,
several particles, a subclass that overrides ``model`` or ``guide``, an extra site, an
active handler such as ``poutine.condition``) goes to Pyro's ELBO, as does a structure
whose check failed. ``tests/test_step.py`` holds it equal to ``Trace_ELBO`` in value
and gradients for every registered likelihood and prior.
"""

from __future__ import annotations

import logging
from typing import Any

import pyro
import torch
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample

from pyro_vae.model import VAE, traces

logger = logging.getLogger(__name__)

#: relative difference from Pyro's loss above which a structure is not replayed
TOLERANCE = 1e-4


def replayable(vae: Any, elbo: pyro.infer.ELBO) -> str | None:
    """Why the training step of ``vae`` under ``elbo`` cannot be replayed, or None when it can."""
    if type(elbo) is not pyro.infer.Trace_ELBO:
        return f"the objective is {type(elbo).__name__}, not Trace_ELBO"
    if elbo.num_particles != 1:
        return f"{elbo.num_particles} particles"
    return own_structure(vae)


def own_structure(vae: Any) -> str | None:
    """Why ``vae.model`` and ``vae.guide`` may not be the sites of its distributions
    (``posterior``, ``prior()``, ``observation``), or None when they are."""
    if not isinstance(vae, VAE):
        return "not a pyro_vae VAE"
    return vae.own_structure()


class ReplayedELBO:
    """``Trace_ELBO(num_particles=1)`` of ``vae.model`` and ``vae.guide``, replayed once
    Pyro's trace of each structure has been checked. Call it as
    ``loss = replayed(x, beta)``; None means "use Pyro's ELBO for this call"."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae
        self.verdicts: dict[tuple, bool] = {}

    def __call__(self, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor | None:
        if _PYRO_STACK:  # the caller wrapped the step in a handler: Pyro must see the sites
            return None
        key = self.structure(x, beta)
        verdict = self.verdicts.get(key)
        if verdict is None:
            verdict = self.verdicts[key] = self.check(x, beta)
        return self.loss(x, beta) if verdict else None

    def structure(self, x: torch.Tensor, beta: float | torch.Tensor) -> tuple:
        kind = (
            "tensor"
            if isinstance(beta, torch.Tensor)
            else ("one" if beta == 1 else "zero" if beta == 0 else "scale")
        )
        vae = self.vae
        return (
            tuple(x.shape[1:]),
            x.dtype,
            x.device,
            kind,
            vae.training,
            vae.missing,
            id(vae.prior),
            id(vae.likelihood),
        )

    def loss(self, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        return -self.vae.log_weights(x).elbo(beta).sum()

    def check(self, x: torch.Tensor, beta: float | torch.Tensor) -> bool:
        """Trace the model and guide with Pyro; True when the structure is the one replayed
        and the replayed loss equals Pyro's at the same draws. Leaves no trace: random
        streams and buffers (running statistics) are restored."""
        vae = self.vae
        buffers = {name: b.clone() for name, b in vae.named_buffers()}
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=_devices(x)):
                seed = int(torch.randint(2**62, ()))
                torch.manual_seed(seed)
                problem = self.structure_problem(x, beta)
                if problem is None:
                    torch.manual_seed(seed)
                    expected = float(
                        pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta)
                    )
                    torch.manual_seed(seed)
                    got = float(self.loss(x, beta))
                    if not abs(got - expected) <= TOLERANCE * max(1.0, abs(expected)):
                        problem = f"its loss {got:.6g} differs from Trace_ELBO's {expected:.6g}"
        finally:
            for name, b in vae.named_buffers():
                b.copy_(buffers[name])
        if problem is not None:
            logger.info("training step: Pyro's Trace_ELBO is used, not the replayed step: %s", problem)
        return problem is None

    def structure_problem(self, x: torch.Tensor, beta: float | torch.Tensor) -> str | None:
        guide, model = traces(self.vae, x, beta)
        guide_sites, model_sites = _sample_sites(guide), _sample_sites(model)
        if guide_sites != ["z"] or model_sites != ["z", "x"]:
            return f"sites {model_sites} (model) and {guide_sites} (guide), not ['z', 'x'] and ['z']"
        if not guide.nodes["z"]["fn"].has_rsample or model.nodes["z"]["is_observed"]:
            return "the latent site is not reparameterised"
        if not model.nodes["x"]["is_observed"]:
            return "the observation site is not observed"
        return None


def _sample_sites(trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]


def _devices(x: torch.Tensor) -> list[int]:
    return [x.device.index or 0] if x.device.type == "cuda" else []
