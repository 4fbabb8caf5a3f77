r"""Annealed importance sampling (AIS) of :math:`\log p(x)`, and the BDMC sandwich.

AIS (Neal 2001; for decoders, Wu et al. 2017, "On the quantitative analysis of
decoder-based generative models") moves each of ``M`` chains per data point through
``T`` intermediate distributions

.. math::
    f_t(z) = \pi_0(z)^{1 - \beta_t}\,\bigl(p(z)\,p(x \mid z)\bigr)^{\beta_t},
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

from a normalised :math:`\pi_0` (the encoder's :math:`q(z \mid x)`, or the prior) to the
unnormalised posterior, with one HMC transition leaving each :math:`f_t` invariant. The
chain's log weight :math:`\sum_t (\beta_t - \beta_{t-1})\,[\log p(x, z_{t-1}) - \log
\pi_0(z_{t-1})]` has :math:`\mathbb E\,w = p(x)`, so :math:`\log \frac1M \sum_m w_m` is a
stochastic lower bound of :math:`\log p(x)` (like importance sampling, which is AIS with
``T = 1`` and no transitions), and it tightens as ``T`` grows, however poor
:math:`\pi_0` is.

Everything is batched: the states of all chains of a chunk of points form one
``(M, n, latent)`` tensor, one leapfrog step is one pass through the decoder and back
(torch autograd, with respect to ``z`` only), and the HMC step size is adapted per point
(shared by its chains) after every transition toward an acceptance rate of 0.65. From
the encoder, the momentum's mass matrix is :math:`\operatorname{diag}(1/\sigma_q(x)^2)`,
so steps are measured in units of the amortized posterior's width (a good guess for a
trained encoder; from the prior it is the identity, which is the robust choice for an
encoder whose scales may be far off). Log weights are accumulated in float64.

BDMC (Grosse et al. 2015, "Sandwiching the marginal likelihood using bidirectional Monte
Carlo"): for data simulated from the model, :math:`z \sim p(z)`, :math:`x \sim p(x\mid z)`,
``z`` is an exact draw of :math:`p(z \mid x)`, so AIS can also run in reverse, from the
posterior to :math:`\pi_0`; its weights estimate :math:`1 / p(x)` without bias, which makes
:math:`-\log \frac1M\sum_m w^{\text{rev}}_m` a stochastic *upper* bound. The two bounds
sandwich the true :math:`\log p(x)`; their gap bounds the error of forward AIS with the
same schedule on data like these.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from pyro_vae.data import evaluation_data
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.infer.chunking import CHUNK_ELEMENTS, default_chunk_size, point_batches, sampling
from pyro_vae.model import VAE
from pyro_vae.utils import positive_int, progress_bar

TARGET_ACCEPTANCE = 0.65
INITIAL_STEP_SIZE = 0.5  # in units of the encoder's scale, per latent dimension
STEP_SIZE_BOUNDS = (1e-4, 20.0)
ADAPT_RATE = 0.5
INITIAL = ("encoder", "prior")
SCHEDULES = ("sigmoid", "linear")


def schedule(num_steps: int, kind: str = "sigmoid", sharpness: float = 4.0) -> torch.Tensor:
    r"""Inverse temperatures :math:`\beta_0 = 0 < \dots < \beta_T = 1`, float64, ``T + 1`` values.

    ``"sigmoid"`` (Grosse et al. 2015): :math:`\tilde\beta_t = \sigma(\delta (2t/T - 1))`
    rescaled to [0, 1], denser at both ends where the distributions change fastest;
    ``"linear"``: evenly spaced.
    """
    positive_int("num_steps", num_steps)
    t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    if kind != "sigmoid":
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    if num_steps == 1:
        return t
    s = torch.sigmoid(sharpness * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISResult:
    r"""Per data point (float64 tensors of length ``n`` unless stated).

    ``log_px``: :math:`\log \frac1M \sum_m w_m`; ``log_px_se``: its delta-method standard
    error over the chains, :math:`\operatorname{sd}(w) / (\sqrt M\, \bar w)` (NaN for one
    chain); ``ess``: :math:`(\sum w)^2 / \sum w^2` of the final weights, between 1 and M;
    ``log_weight_sd``: the spread of the chains' log weights (near 0 when the annealing
    has converged: every chain found the same mass); ``acceptance``: the HMC acceptance
    rate averaged over transitions and chains; ``step_size``: the last adapted step (in
    units of the encoder's scale); ``log_weights`` ``(M, n)``; ``acceptance_by_step``
    ``(T - 1,)``: acceptance averaged over chains and points at each temperature.
    """

    log_px: torch.Tensor
    log_px_se: torch.Tensor
    ess: torch.Tensor
    log_weight_sd: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    log_weights: torch.Tensor
    acceptance_by_step: torch.Tensor
    num_steps: int
    num_chains: int
    num_leapfrog: int
    initial: str
    seconds: float = 0.0

    @property
    def seconds_per_point(self) -> float:
        return self.seconds / max(1, self.log_px.numel())

    def summary(self) -> dict[str, Any]:
        """Means over points, JSON-ready."""
        n = self.log_px.numel()
        return {
            "log_likelihood": self.log_px.mean().item(),
            "log_likelihood_se": self.log_px.std().item() / math.sqrt(n) if n > 1 else float("nan"),
            "mean_point_se": self.log_px_se.mean().item(),
            "ess_mean": self.ess.mean().item(),
            "ess_min": self.ess.min().item(),
            "log_weight_sd_mean": self.log_weight_sd.mean().item(),
            "acceptance_mean": self.acceptance.mean().item(),
            "acceptance_min": self.acceptance.min().item(),
            "num_points": n,
            "num_steps": self.num_steps,
            "num_chains": self.num_chains,
            "num_leapfrog": self.num_leapfrog,
            "initial": self.initial,
            "seconds": self.seconds,
            "seconds_per_point": self.seconds_per_point,
        }


class _Target:
    r"""The annealing path of one chunk of points: log densities and their gradients in ``z``.

    ``h(z) = log p(x, z) - log pi_0(z)`` is what the weights accumulate;
    ``log f_beta = log pi_0 + beta h``. Both densities come from the VAE's one seam:
    :meth:`~pyro_vae.model.VAE.log_joint` for :math:`p(x, z)` (masked to the observed cells,
    for any accepted data shape) and the guide's own distribution for :math:`q(z \mid x)`.
    """

    def __init__(self, vae: VAE, x: torch.Tensor, initial: str):
        self.vae = vae
        self.x = x
        self.prior = vae.prior()
        self.posterior = vae.posterior(vae.shaped(x))
        self.initial = initial

    def inverse_mass(self) -> torch.Tensor:
        """The momentum's inverse mass per point and dimension: the initial distribution's variance
        (the guide's, or 1 from the prior, whose scale the standard priors share)."""
        if self.initial == "prior":
            return torch.ones(self.x.shape[0], self.vae.latent_dim, dtype=self.x.dtype, device=self.x.device)
        return _variance(self.posterior)

    def sample_initial(self, m: int) -> torch.Tensor:
        start = self.prior if self.initial == "prior" else self.posterior
        return start.sample((m,) if self.initial != "prior" else (m, self.x.shape[0]))

    def evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi_0, h, grad log pi_0, grad h) at ``z`` ``(M, n, L)``, each detached."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_px_z, log_pz = self.vae.log_joint(z, self.x)
            log_pi0 = log_pz if self.initial == "prior" else self.posterior.log_prob(z)
            (g_pi0,) = torch.autograd.grad(log_pi0.sum(), z, retain_graph=True)
            log_joint = log_px_z + log_pz
            (g_joint,) = torch.autograd.grad(log_joint.sum(), z)
        log_pi0, log_joint = log_pi0.detach(), log_joint.detach()
        return log_pi0, log_joint - log_pi0, g_pi0, g_joint - g_pi0


def _variance(posterior: torch.distributions.Distribution, draws: int = 256) -> torch.Tensor:
    """The guide's variance per point and dimension; estimated from ``draws`` draws for a
    guide without a closed form (a flow)."""
    try:
        return posterior.variance
    except NotImplementedError:
        return posterior.sample((draws,)).var(0)


@dataclass
class _State:
    z: torch.Tensor
    log_pi0: torch.Tensor
    h: torch.Tensor
    g_pi0: torch.Tensor
    g_h: torch.Tensor

    def log_f(self, beta: float) -> torch.Tensor:
        return self.log_pi0 + beta * self.h

    def grad(self, beta: float) -> torch.Tensor:
        return self.g_pi0 + beta * self.g_h


def _state(target: _Target, z: torch.Tensor) -> _State:
    return _State(z, *target.evaluate(z))


def _hmc(
    target: _Target, s: _State, beta: float, step: torch.Tensor, inv_mass: torch.Tensor, num_leapfrog: int
) -> tuple[_State, torch.Tensor]:
    """One HMC transition leaving f_beta invariant, for every chain: (new state, acceptance)."""
    p = torch.randn_like(s.z) / inv_mass.sqrt()  # momentum ~ N(0, M), M = diag(1 / inv_mass)
    eps = step[:, None]  # (n, 1): one step per point, broadcast over chains and dimensions
    kinetic0 = 0.5 * (p**2 * inv_mass).sum(-1)
    new = s
    p = p + 0.5 * eps * new.grad(beta)
    for i in range(num_leapfrog):
        new = _state(target, new.z + eps * inv_mass * p)
        if i < num_leapfrog - 1:
            p = p + eps * new.grad(beta)
    p = p + 0.5 * eps * new.grad(beta)
    kinetic1 = 0.5 * (p**2 * inv_mass).sum(-1)
    log_ratio = (new.log_f(beta) - kinetic1) - (s.log_f(beta) - kinetic0)
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    accept_prob = log_ratio.clamp(max=0).exp()
    accept = torch.rand_like(accept_prob) < accept_prob
    keep = accept[..., None]
    out = _State(
        torch.where(keep, new.z, s.z),
        torch.where(accept, new.log_pi0, s.log_pi0),
        torch.where(accept, new.h, s.h),
        torch.where(keep, new.g_pi0, s.g_pi0),
        torch.where(keep, new.g_h, s.g_h),
    )
    return out, accept_prob


def _anneal(
    target: _Target, z0: torch.Tensor, betas: torch.Tensor, num_leapfrog: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the chains from ``z0`` through ``betas``: (log weights (M, n) float64, acceptance (n,),
    acceptance per transition (T - 1,), last step sizes (n,)).

    At each new temperature the weight gains ``(beta_t - beta_{t-1}) h(z)`` at the current
    state, then (except after the last) one HMC transition at ``beta_t`` moves the state.
    Decreasing ``betas`` run the chain in reverse (BDMC's upper bound).
    """
    s = _state(target, z0)
    n = z0.shape[1]
    inv_mass = target.inverse_mass()  # (n, L)
    step = torch.full((n,), INITIAL_STEP_SIZE, dtype=z0.dtype, device=z0.device)
    log_w = torch.zeros(z0.shape[:2], dtype=torch.float64, device=z0.device)
    acc_sum = torch.zeros(n, dtype=torch.float64, device=z0.device)
    by_step = []
    betas_list = betas.tolist()
    for t in range(1, len(betas_list)):
        beta = betas_list[t]
        log_w += (beta - betas_list[t - 1]) * s.h.double()
        if t == len(betas_list) - 1:
            break
        s, acc = _hmc(target, s, beta, step, inv_mass, num_leapfrog)
        acc_point = acc.mean(0)
        acc_sum += acc_point.double()
        by_step.append(acc_point.mean().item())
        step = (step * torch.exp(ADAPT_RATE * (acc_point - TARGET_ACCEPTANCE))).clamp(*STEP_SIZE_BOUNDS)
    transitions = max(1, len(betas_list) - 2)
    return log_w, acc_sum / transitions, torch.tensor(by_step, dtype=torch.float64), step


def _weight_stats(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log mean w, delta-method s.e. of it, ESS, sd of log w) per point from ``log_w`` (M, n)."""
    m = log_w.shape[0]
    log_px = torch.logsumexp(log_w, 0) - math.log(m)
    w = (log_w - log_w.amax(0)).exp()
    if m > 1:
        se = w.std(0) / (math.sqrt(m) * w.mean(0))
        sd = log_w.std(0)
    else:
        se = sd = torch.full_like(log_px, math.nan)
    ess = w.sum(0) ** 2 / (w**2).sum(0)
    return log_px, se, ess, sd


def _check_options(num_steps: int, num_chains: int, num_leapfrog: int, initial: str) -> None:
    positive_int("num_steps", num_steps)
    positive_int("num_chains", num_chains)
    positive_int("num_leapfrog", num_leapfrog)
    if initial not in INITIAL:
        raise ConfigError(f"initial must be one of {', '.join(INITIAL)}, got {initial!r}")


def _working_copy(vae: VAE, dtype: torch.dtype | None) -> VAE:
    """A frozen copy in eval mode (in ``dtype`` if given): gradients flow to ``z`` only."""
    work = copy.deepcopy(vae)
    if dtype is not None:
        work = work.to(dtype)
    work.eval()
    for p in work.parameters():
        p.requires_grad_(False)
    return work


def _points_per_chunk(vae: VAE, num_chains: int, chunk_size: int | None) -> int:
    # the backward pass keeps the forward's activations: a quarter of evaluate's default chunk
    pairs = default_chunk_size(vae, CHUNK_ELEMENTS // 4) if chunk_size is None else chunk_size
    positive_int("chunk_size", pairs)
    return max(1, pairs // num_chains)


def _run(
    work: VAE,
    batches: Any,
    betas: torch.Tensor,
    num_chains: int,
    num_leapfrog: int,
    initial: str,
) -> AISResult:
    """AIS over ``batches`` of ``(x, z)``: from pi_0 when ``z`` is None, else in reverse from ``z``."""
    start = time.perf_counter()
    parts: dict[str, list[torch.Tensor]] = {"log_w": [], "acc": [], "step": []}
    by_step = []
    dtype = next(work.parameters()).dtype
    for x, z in batches:
        target = _Target(work, x.to(dtype), initial)
        if z is None:
            z0, path = target.sample_initial(num_chains), betas
        else:
            z0, path = z.to(dtype).expand(num_chains, *z.shape).clone(), betas.flip(0)
        log_w, acc, acc_by_step, step = _anneal(target, z0, path, num_leapfrog)
        parts["log_w"].append(log_w.cpu())
        parts["acc"].append(acc.cpu())
        parts["step"].append(step.double().cpu())
        by_step.append((acc_by_step, x.shape[0]))
    if not parts["log_w"]:
        raise DataError("no data to evaluate: the data set is empty")
    log_w = torch.cat(parts["log_w"], 1)
    log_px, se, ess, sd = _weight_stats(log_w)
    n_total = sum(k for _, k in by_step)
    return AISResult(
        log_px=log_px,
        log_px_se=se,
        ess=ess,
        log_weight_sd=sd,
        acceptance=torch.cat(parts["acc"]),
        step_size=torch.cat(parts["step"]),
        log_weights=log_w,
        acceptance_by_step=sum(a * k for a, k in by_step) / n_total,
        num_steps=len(betas) - 1,
        num_chains=num_chains,
        num_leapfrog=num_leapfrog,
        initial=initial,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def ais(
    vae: VAE,
    data: Any,
    *,
    dtype: torch.dtype | None = None,
    num_steps: int = 500,
    num_chains: int = 16,
    num_leapfrog: int = 10,
    initial: str = "encoder",
    schedule_kind: str = "sigmoid",
    seed: int = 0,
    chunk_size: int | None = None,
    split: str | None = None,
    progress: bool = False,
) -> AISResult:
    r"""Annealed importance sampling of :math:`\log p(x)` for every point of ``data``.

    ``num_steps`` intermediate distributions ``T`` (schedule ``schedule_kind``),
    ``num_chains`` independent chains per point, ``num_leapfrog`` leapfrog steps per HMC
    transition, starting from ``initial`` = ``"encoder"`` (:math:`q(z \mid x)`) or
    ``"prior"``. ``data`` is anything :func:`pyro_vae.evaluate` takes (a ``DataSplits``:
    its ``split``, default ``"test"``; the log p(x) is then in model space, without the
    preprocessing's Jacobian). ``dtype=torch.float64`` runs the networks in double
    precision (a copy of the model is used; the weights accumulate in float64 anyway).
    At most ``chunk_size`` (chain, point) pairs pass through the networks at once.
    ``progress`` shows the points done (a tqdm bar; a line every 30 s in a log).

    Cost: about ``num_steps x num_leapfrog x num_chains`` decoder passes forward and back
    per point, against ``K`` forward passes for importance sampling.
    Returns :class:`AISResult`.
    """
    _check_options(num_steps, num_chains, num_leapfrog, initial)
    betas = schedule(num_steps, schedule_kind)
    data, _ = evaluation_data(data, split, None)
    device = next(vae.parameters()).device
    with sampling(vae, seed, device):
        work = _working_copy(vae, dtype)
        points = _points_per_chunk(vae, num_chains, chunk_size)
        batches = ((x, None) for x in point_batches(vae, data, points, device))
        with progress_bar(desc="AIS", unit="pt", enabled=progress, leave=False) as bar:
            return _run(work, _counted(batches, bar), betas, num_chains, num_leapfrog, initial)


def _counted(batches: Any, bar: Any) -> Any:
    """``batches`` unchanged; ``bar`` advances by each batch's points once it is done."""
    for x, z in batches:
        yield x, z
        bar.update(x.shape[0])


@dataclass
class BDMCResult:
    r"""The sandwich per simulated point: ``lower`` (forward AIS) :math:`\lesssim \log p(x)
    \lesssim` ``upper`` (reverse AIS from the exact posterior draw), both stochastic bounds.

    ``x`` ``(n, D)`` and ``z`` ``(n, L)`` are the simulated pairs; ``forward`` and
    ``reverse`` the two runs (``reverse.log_px`` is the log-mean of the reverse weights,
    an estimate of :math:`-\log p(x)`); ``gap = upper - lower``.
    """

    x: torch.Tensor
    z: torch.Tensor
    forward: AISResult
    reverse: AISResult

    @property
    def lower(self) -> torch.Tensor:
        return self.forward.log_px

    @property
    def upper(self) -> torch.Tensor:
        return -self.reverse.log_px

    @property
    def gap(self) -> torch.Tensor:
        return self.upper - self.lower

    def summary(self) -> dict[str, Any]:
        """Means over the simulated points, JSON-ready."""
        return {
            "lower": self.lower.mean().item(),
            "upper": self.upper.mean().item(),
            "gap_mean": self.gap.mean().item(),
            "gap_median": self.gap.median().item(),  # the mean can be one stuck chain's
            "gap_max": self.gap.max().item(),
            "num_points": self.lower.numel(),
            "forward": self.forward.summary(),
            "reverse": self.reverse.summary(),
        }


@torch.no_grad()
def bdmc(vae: VAE, num_points: int, num_steps: int = 500, num_chains: int = 16, **options: Any) -> BDMCResult:
    r"""Bidirectional Monte Carlo on ``num_points`` pairs simulated from ``vae``.

    Draws :math:`z \sim p(z)`, :math:`x \sim p(x \mid z)`, then runs forward AIS on
    ``x`` (a stochastic lower bound of :math:`\log p(x)`) and reverse AIS from each
    point's own ``z``, an exact posterior draw (a stochastic upper bound), with the same
    schedule, chains and transitions. ``options`` are those of :func:`ais` (``num_leapfrog``,
    ``initial``, ``schedule_kind``, ``seed``, ``chunk_size``, ``dtype``). Returns
    :class:`BDMCResult`. The gap measures how far AIS with these settings can be from the
    truth on data like the model's own; it says nothing about data the model fits badly.
    """
    unknown = set(options) - {"num_leapfrog", "initial", "schedule_kind", "seed", "chunk_size", "dtype"}
    if unknown:
        raise ConfigError(f"bdmc: unknown option(s) {', '.join(sorted(unknown))}")
    num_leapfrog, initial = options.get("num_leapfrog", 10), options.get("initial", "encoder")
    seed, chunk_size, dtype = options.get("seed", 0), options.get("chunk_size"), options.get("dtype")
    positive_int("num_points", num_points)
    _check_options(num_steps, num_chains, num_leapfrog, initial)
    betas = schedule(num_steps, options.get("schedule_kind", "sigmoid"))
    device = next(vae.parameters()).device
    with sampling(vae, seed, device):
        z = vae.prior().sample((num_points,))
        x = vae.decode(z).sample()
        work = _working_copy(vae, dtype)
        points = _points_per_chunk(vae, num_chains, chunk_size)
        slices = [slice(i, i + points) for i in range(0, num_points, points)]
        forward = _run(work, ((x[s], None) for s in slices), betas, num_chains, num_leapfrog, initial)
        reverse = _run(work, ((x[s], z[s]) for s in slices), betas, num_chains, num_leapfrog, initial)
    return BDMCResult(x=x.cpu(), z=z.cpu(), forward=forward, reverse=reverse)
