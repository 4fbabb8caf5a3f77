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

import functools
import logging
import os
import shutil
from typing import Any

import pyro
import torch
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample

from pyro_vae.model import VAE, traces

logger = logging.getLogger(__name__)

#: relative difference from Pyro's loss above which a structure is not replayed
TOLERANCE = 1e-4
#: inductor's options for the compiled step: eager's random-number generator, so that a
#: compiled step draws the z an eager one draws from the same seed
COMPILE_OPTIONS = {"fallback_random": True}


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
        self.compiled: Any = None  # ``loss`` through torch.compile, after :meth:`compile`

    def __call__(self, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor | None:
        if _PYRO_STACK:  # the caller wrapped the step in a handler: Pyro must see the sites
            return None
        key = self.structure(x, beta)
        verdict = self.verdicts.get(key)
        if verdict is None:
            verdict = self.verdicts[key] = self.check(x, beta)
        if not verdict:
            return None
        return self.loss(x, beta) if self.compiled is None else self.compiled_loss(x, beta)

    def compile(self, device: torch.device) -> str | None:
        """Replay :meth:`loss` through ``torch.compile`` from now on (checks still run
        eagerly). Returns why it cannot (the step then stays eager), or None.

        Args:
            device: where the step runs (a CPU needs a C++ compiler, CUDA triton).

        Returns:
            None, or what is missing.
        """
        problem = compiler_problem(device)
        if problem is None:
            self.compiled = _compiled_loss()
        return problem

    def compiled_loss(self, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        """:meth:`loss` through the compiled kernels; eager from then on if compiling fails."""
        if isinstance(beta, float) and beta not in (0.0, 1.0):
            # a tensor, not a constant: one graph for every beta of a warm-up, not one each
            beta = torch.tensor(beta, dtype=x.dtype, device=x.device)
        try:
            return self.compiled(self, x, beta)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager step computes the same
            logger.warning(
                "training step: torch.compile failed, the eager step is used: %s",
                str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
            )
            self.compiled = None
            return self.loss(x, beta)

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


def compiler_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build the step's kernels for ``device`` here, or None.

    Args:
        device: the training device.

    Returns:
        None, or what is missing: inductor builds CPU kernels with a C++ compiler
        (``$CXX``, ``g++``, ``c++`` or ``clang++``) and CUDA kernels with triton.
    """
    if device.type == "cpu":
        if not any(name and shutil.which(name) for name in (os.environ.get("CXX"), "g++", "c++", "clang++")):
            return "no C++ compiler on PATH (g++, c++, clang++ or $CXX)"
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401  (only whether it is installed)
        except ImportError:
            return "triton is not installed"
    return None


@functools.cache
def _compiled_loss() -> Any:
    """``ReplayedELBO.loss`` compiled, once per process. Its guards are on the VAE's
    structure, not its identity, so every ``ReplayedELBO`` of a VAE shaped alike reuses the
    kernels: a second ``fit`` in the same process does not compile again."""
    return torch.compile(ReplayedELBO.loss, dynamic=False, options=COMPILE_OPTIONS)


def _sample_sites(trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]


def _devices(x: torch.Tensor) -> list[int]:
    return [x.device.index or 0] if x.device.type == "cuda" else []
