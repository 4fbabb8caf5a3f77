r"""Evaluation: importance-sampled :math:`\log p(x)`, the ELBO and its parts, active units.

For each data point, with :math:`z_k \sim q(z \mid x)`, :math:`k = 1..K`,

.. math::
    \log \hat p(x) = \log \frac1K \sum_{k=1}^K \frac{p(x \mid z_k)\,p(z_k)}{q(z_k \mid x)},

a stochastic lower bound that converges to :math:`\log p(x)` as :math:`K \to \infty`
(Burda et al., 2015). The weights come from Pyro traces of ``vae.guide`` and
``vae.model`` (replayed), with the K samples vectorised by an outer
``pyro.plate``, so any registered prior or likelihood is evaluated the same way.

Work is chunked over data points and samples so that at most ``chunk_size``
(sample, data point) pairs pass through the networks at once. By default the chunk is
sized so that the largest intermediate tensor holds about ``2**21`` numbers (8 MiB in
float32), counting the decoder's output, the hidden layers and, for mixture priors, the
per-component densities, whatever K and the number of data points are. Larger chunks are
slower on CPU: each big temporary is then a fresh allocation from the kernel.

Known problem: in one call over all 10000 MNIST test images at K = 5000 the process's
resident memory was seen to grow by gigabytes after about half of them, although no tensor
is kept between chunks, while calls over a few thousand points stay flat; evaluate large
sets in slices. ``benchmarks/eval_speed.py`` reports the peak.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from pyro_vae.data import as_tensor, evaluation_data
from pyro_vae.distributions.priors import FactorizedPrior
from pyro_vae.errors import ConfigError, DataError, NonFiniteError
from pyro_vae.infer import distributed as dist_utils
from pyro_vae.infer.ais import ais
from pyro_vae.infer.chunking import (  # noqa: F401  (CHUNK_ELEMENTS and chunk_plan stay importable from here)
    CHUNK_ELEMENTS,
    chunk_plan,
    default_chunk_size,
    point_batches,
    sampling,
    weight_chunks,
)
from pyro_vae.model import VAE, LogWeights
from pyro_vae.utils import check_finite_weights, positive_int, progress_bar  # noqa: F401 (re-exported)

METHODS = ("importance", "ais")
ACTIVE_UNIT_THRESHOLD = 0.01
# Samples per point for the Monte Carlo KL per dimension where no closed form exists: the
# marginals of a K-component prior cost K x latent_dim per sample, and this is a diagnostic.
KL_PER_DIM_SAMPLES = 100


def _kl(
    vae: VAE, posterior: dist.Distribution, per_dim: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Closed-form KL per point and per dimension, where torch knows them (else None)."""
    prior = vae.prior
    try:
        total = kl_divergence(posterior, prior())
    except NotImplementedError:
        total = None
    by_dim = None
    base = vae.variational.marginals(posterior)  # q(z_j|x): Gaussian for diagonal and lowrank guides
    if per_dim and base is not None and isinstance(prior, FactorizedPrior):
        try:
            by_dim = kl_divergence(base, prior.base())
        except NotImplementedError:
            by_dim = None
    return total, by_dim


def _posterior_mean(posterior: dist.Distribution, z: torch.Tensor) -> torch.Tensor:
    """The guide's mean per point, or the mean of its draws ``z`` where it has no closed form."""
    try:
        return posterior.mean
    except NotImplementedError:
        return z.mean(0)


def _kl_per_dim_draws(vae: VAE, w: LogWeights, most: int) -> torch.Tensor:
    """Summed over at most ``most`` of the draws ``w.z``: log q(z_j|x) - log p(z_j) per dimension
    (the guide's Gaussian marginals; NaN for a guide whose marginals have no closed form)."""
    z = w.z[:most]
    base = vae.variational.marginals(w.posterior)
    if base is None:
        return torch.full(z.shape[1:], math.nan, device=z.device)
    return (base.log_prob(z) - vae.prior.marginal_log_prob(z)).sum(0)


@torch.no_grad()
def evaluate(
    vae: VAE,
    data: Any,
    num_samples: int = 1000,
    *,
    chunk_size: int | None = None,
    seed: int = 0,
    split: str | None = None,
    log_abs_det_jacobian: float | Any = None,
    kl_per_dim: bool = True,
    distributed: bool | None = None,
    progress: bool = False,
    method: str = "importance",
    ais_steps: int = 500,
    ais_chains: int = 16,
    ais_leapfrog: int = 10,
    ais_initial: str = "encoder",
) -> dict[str, Any]:
    r"""Evaluate ``vae`` on ``data`` (tensor, array, ``Dataset`` or ``DataLoader``).

    ``data`` may also be a :class:`~pyro_vae.data.DataSplits`: its ``split`` (default
    ``"test"``) is scored, with its preprocessing's Jacobian as ``log_abs_det_jacobian``.

    Returns means over data points (nats per data point unless stated):

    * ``log_likelihood``: importance-sampled :math:`\log p(x)` with ``num_samples``
      samples (and ``log_likelihood_se``, its standard error over data points);
    * ``elbo`` = ``reconstruction`` - ``kl``: :math:`\mathbb E_q \log p(x|z)` by Monte Carlo,
      the KL in closed form where one exists (else Monte Carlo);
    * ``kl_per_dim``: :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` per latent dimension, against the
      prior's marginals (these sum to ``kl`` for factorised priors only); in closed form
      where torch has it, else by Monte Carlo with at most 100 samples per point
      (``kl_per_dim=False`` skips it; None for a guide whose marginals are not Gaussian,
      the ``flow`` guide, :mod:`pyro_vae.distributions.guides`); the ``kl`` of a guide other than the
      diagonal Gaussian is a Monte Carlo average over the ``num_samples`` draws;
    * ``active_units``: dimensions whose posterior mean varies over the data with
      variance above 0.01 (Burda et al., 2015);
    * ``log_likelihood_data_units``: :math:`\log p(x) + J`, with ``log_abs_det_jacobian``
      :math:`J` of the preprocessing: the density of the data in their own units (raw
      grey levels, a table's columns before standardization); ``log_abs_det_jacobian``,
      the mean :math:`J` per point;
    * ``bits_per_dim`` for continuous likelihoods: :math:`-(\log p(x) + J)/(D \ln 2)`
      (so that dequantized images are scored per raw grey level);
    * ``missing_cells``, ``missing_rows``: NaN cells, and points with one, in the data. A
      point with missing cells is scored on its observed cells, :math:`\log p(x_{obs})`;
      ``J`` then counts those cells alone and ``D`` is the mean number observed;

    and ``pointwise``: per-point tensors ``log_likelihood``, ``log_likelihood_data_units``
    and ``elbo``.

    ``log_abs_det_jacobian`` is a number (per point) or, for per-feature affine maps, one
    number per feature (:meth:`pyro_vae.data.Preprocessing.log_abs_det_jacobian_per_feature`),
    summed over each point's observed cells.

    ``method="ais"`` estimates :math:`\log p(x)` by annealed importance sampling instead
    (:func:`pyro_vae.infer.ais.ais` with ``ais_steps`` temperatures, ``ais_chains`` chains per
    point, ``ais_leapfrog`` leapfrog steps per HMC transition, from ``ais_initial``:
    ``"encoder"`` or ``"prior"``), in the calling process alone; the ELBO and its parts
    still come from the ``num_samples`` draws of q. It adds ``method``, ``ais_steps``,
    ``ais_chains``, ``ais_ess`` and ``ais_acceptance`` (means over points),
    ``log_likelihood_importance`` (the importance-sampled value with ``num_samples``), and
    per point ``log_likelihood_se`` (AIS's own standard error), ``ais_ess``,
    ``ais_acceptance``, ``ais_log_weight_sd`` and ``log_likelihood_importance``.

    In a ``torchrun`` launch (an initialised process group) the data are split over the
    processes and the results gathered, so *every* process must call ``evaluate``; pass
    ``distributed=False`` to evaluate everything in the calling process alone.

    Raises :class:`~pyro_vae.errors.NonFiniteError` (a ``ValueError``) before any work if a
    parameter or buffer of ``vae`` holds NaN or infinite values, and after it if
    ``log_likelihood``, ``elbo``, ``reconstruction``, ``kl`` or ``kl_per_dim`` is not finite.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    data, log_abs_det_jacobian = evaluation_data(data, split, log_abs_det_jacobian)
    check_finite_weights(vae)
    if method == "ais":
        distributed = False  # AIS runs in the calling process; so must the ELBO beside it
    options = dict(chunk_size=chunk_size, seed=seed, kl_per_dim=kl_per_dim, distributed=distributed)
    result = _evaluate(
        vae, data, num_samples, log_abs_det_jacobian=log_abs_det_jacobian, progress=progress, **options
    )
    if method == "ais":
        ais_options = dict(num_leapfrog=ais_leapfrog, initial=ais_initial, seed=seed, progress=progress)
        _replace_with_ais(result, vae, data, ais_steps, ais_chains, log_abs_det_jacobian, **ais_options)
    check_finite_results(result)
    return result


def _replace_with_ais(
    result: dict[str, Any],
    vae: VAE,
    data: Any,
    steps: int,
    chains: int,
    log_abs_det_jacobian: float,
    **options: Any,
) -> None:
    """Put AIS's log p(x) in ``result`` in place of the importance-sampled one (kept beside it)."""
    run = ais(vae, data, num_steps=steps, num_chains=chains, **options)
    pointwise = result["pointwise"]
    n = run.log_px.numel()
    result["log_likelihood_importance"] = result["log_likelihood"]
    result["log_likelihood"] = run.log_px.mean().item()
    result["log_likelihood_se"] = run.log_px.std().item() / math.sqrt(n) if n > 1 else float("nan")
    result.update(
        method="ais",
        ais_steps=steps,
        ais_chains=chains,
        ais_leapfrog=options["num_leapfrog"],
        ais_initial=options["initial"],
        ais_ess=run.ess.mean().item(),
        ais_acceptance=run.acceptance.mean().item(),
        ais_seconds=run.seconds,
    )
    pointwise["log_likelihood_importance"] = pointwise["log_likelihood"]
    ldj = pointwise["log_likelihood_data_units"] - pointwise["log_likelihood"]
    pointwise["log_likelihood_data_units"] = run.log_px.float() + ldj
    _data_units(result, vae, pointwise)
    pointwise.update(
        log_likelihood=run.log_px.float(),
        log_likelihood_se=run.log_px_se.float(),
        ais_ess=run.ess.float(),
        ais_acceptance=run.acceptance.float(),
        ais_log_weight_sd=run.log_weight_sd.float(),
    )


def _data_units(result: dict[str, Any], vae: VAE, pointwise: dict[str, torch.Tensor]) -> None:
    """``log_likelihood_data_units`` and ``bits_per_dim`` from the per-point values, in place."""
    in_data_units = pointwise["log_likelihood_data_units"]
    result["log_likelihood_data_units"] = in_data_units.mean().item()
    if not vae.likelihood.discrete:
        cells = vae.input_dim - result["missing_cells"] / result["num_points"]  # observed, per point
        result["bits_per_dim"] = -result["log_likelihood_data_units"] / (cells * math.log(2))


def _jacobian_rows(x: torch.Tensor, ldj: float | torch.Tensor) -> torch.Tensor:
    """Per point: ``ldj`` itself, or the per-feature values summed over the observed cells."""
    observed = ~torch.isnan(x.reshape(x.shape[0], -1))
    if isinstance(ldj, torch.Tensor) and not observed.all():
        return observed.to(ldj.dtype) @ ldj.to(x.device)
    total = float(ldj.sum()) if isinstance(ldj, torch.Tensor) else float(ldj)
    return torch.full((x.shape[0],), total, dtype=torch.float64, device=x.device)


_CAUSES = {
    "log_likelihood": "log p(x|z), log p(z) or log q(z|x) overflowed for some draws",
    "elbo": "log p(x|z) or the KL overflowed",
    "reconstruction": "log p(x|z) overflowed",
    "kl": "log q(z|x) - log p(z) overflowed (codes far outside the prior's support)",
    "kl_per_dim": "the prior's marginal densities underflowed at the posterior's draws",
}


def check_finite_results(result: dict[str, Any]) -> None:
    """Raise :class:`~pyro_vae.errors.NonFiniteError` if a metric of :func:`evaluate` is NaN or infinite."""
    for metric in ("log_likelihood", "elbo", "reconstruction", "kl", "kl_per_dim"):
        values = result.get(metric)
        if values is None:
            continue
        values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if torch.isfinite(values).all():
            continue
        where = ""
        pointwise = result.get("pointwise", {}).get(metric)
        if pointwise is not None:
            bad = (~torch.isfinite(pointwise)).nonzero().reshape(-1)
            where = (
                f" for {bad.numel()} of {pointwise.numel()} data points (the first is point {bad[0].item()})"
            )
        elif metric == "kl_per_dim":
            where = f" in dimension(s) {(~torch.isfinite(values)).nonzero().reshape(-1).tolist()}"
        raise NonFiniteError(
            f"evaluate: {metric} is not finite{where}: {_CAUSES[metric]}. The weights are finite, so the "
            "decoder's outputs or the data are too large in magnitude for float32: standardize the data "
            "(pyro_vae.data.load_array(..., standardize=True)), or retrain with a smaller learning rate"
        )


@torch.no_grad()
def _evaluate(
    vae: VAE,
    data: Any,
    num_samples: int,
    *,
    chunk_size: int | None,
    seed: int,
    log_abs_det_jacobian: float,
    kl_per_dim: bool,
    distributed: bool | None,
    progress: bool,
) -> dict[str, Any]:
    """:func:`evaluate` without its checks for non-finite weights and results."""
    positive_int("num_samples", num_samples)
    ctx = dist_utils.current() if distributed is not False else dist_utils.SINGLE
    if ctx.world_size > 1:
        # Each process scores a contiguous share with its own draws; results are gathered.
        data = dist_utils.shard_rows(as_tensor(data), ctx)
        seed = seed + ctx.rank
    k_chunk, n_chunk = chunk_plan(num_samples, default_chunk_size(vae) if chunk_size is None else chunk_size)
    device = next(vae.parameters()).device
    probe = dist.Normal(torch.zeros(1, vae.latent_dim, device=device), 1.0).to_event(1)
    if kl_per_dim and vae.variational.marginals(vae.variational(probe.mean, probe.stddev)) is None:
        kl_per_dim = False  # a flow guide: its marginals q(z_j|x) have no closed form
    mc_kl_per_dim = kl_per_dim and _kl(vae, probe)[1] is None  # no closed form per dimension
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("log_px", "elbo", "recon", "kl", "kl_dim", "loc", "ldj", "missing")
    }
    if not isinstance(log_abs_det_jacobian, (int, float)):  # one value per feature
        log_abs_det_jacobian = torch.as_tensor(log_abs_det_jacobian, dtype=torch.float64).reshape(-1)
        if log_abs_det_jacobian.numel() == 1 and vae.input_dim > 1:
            log_abs_det_jacobian = log_abs_det_jacobian.item()
    with sampling(vae, seed, device):
        bar = progress_bar(desc="evaluating", unit="pt", enabled=progress, leave=False)
        for x in point_batches(vae, data, n_chunk, device):
            n = x.shape[0]
            lse = torch.full((n,), -math.inf, device=device)
            sum_recon = torch.zeros(n, device=device)
            sum_kl = torch.zeros(n, device=device)
            sum_kl_dim, kl_dim_draws = torch.zeros(n, vae.latent_dim, device=device), 0
            for w in weight_chunks(vae, x, num_samples, k_chunk):
                lse = torch.logaddexp(lse, torch.logsumexp(w.log_w, 0))
                sum_recon += w.log_px_z.sum(0)
                sum_kl += (w.log_q - w.log_pz).sum(0)
                if mc_kl_per_dim and kl_dim_draws < KL_PER_DIM_SAMPLES:
                    sum_kl_dim += _kl_per_dim_draws(vae, w, KL_PER_DIM_SAMPLES - kl_dim_draws)
                    kl_dim_draws += min(w.z.shape[0], KL_PER_DIM_SAMPLES - kl_dim_draws)
            kl_total, kl_dim = _kl(vae, w.posterior, per_dim=kl_per_dim)
            loc = _posterior_mean(w.posterior, w.z)
            recon = sum_recon / num_samples
            kl = kl_total if kl_total is not None else sum_kl / num_samples
            out["log_px"].append(lse - math.log(num_samples))
            out["recon"].append(recon)
            out["kl"].append(kl)
            out["elbo"].append(recon - kl)
            out["kl_dim"].append(kl_dim if kl_dim is not None else sum_kl_dim / max(kl_dim_draws, 1))
            out["loc"].append(loc)
            out["ldj"].append(_jacobian_rows(x, log_abs_det_jacobian))
            out["missing"].append(torch.isnan(x.reshape(n, -1)).sum(1).float())
            bar.update(n)
        bar.close()
    if ctx.world_size > 1:  # every process holds its share: gather them in rank order
        widths = {"kl_dim": vae.latent_dim, "loc": vae.latent_dim}
        cat = {
            k: dist_utils.gather_rows(
                torch.cat(v) if v else torch.empty(0, *([widths[k]] if k in widths else []), device=device)
            )
            for k, v in out.items()
        }
    elif out["log_px"]:
        cat = {k: torch.cat(v) for k, v in out.items()}
    else:
        cat = {"log_px": torch.empty(0)}
    cat = {k: v.cpu() for k, v in cat.items()}
    n_points = cat["log_px"].numel()
    if n_points == 0:
        raise DataError("no data to evaluate: the data set is empty")
    log_px = cat["log_px"]
    result: dict[str, Any] = {
        "log_likelihood": log_px.mean().item(),
        "log_likelihood_se": (log_px.std().item() / math.sqrt(n_points)) if n_points > 1 else float("nan"),
        "elbo": cat["elbo"].mean().item(),
        "kl": cat["kl"].mean().item(),
        "reconstruction": cat["recon"].mean().item(),
        "active_units": active_units(cat["loc"]),
        "kl_per_dim": cat["kl_dim"].mean(0).tolist() if kl_per_dim else None,
        "num_samples": num_samples,
        "num_points": n_points,
    }
    missing = cat["missing"]
    result["missing_cells"] = int(missing.sum().item())
    result["missing_rows"] = int((missing > 0).sum().item())
    result["log_abs_det_jacobian"] = cat["ldj"].mean().item()
    result["pointwise"] = {
        "log_likelihood": log_px,
        "elbo": cat["elbo"],
        "log_likelihood_data_units": log_px + cat["ldj"],
    }
    _data_units(result, vae, result["pointwise"])
    return result


def active_units(posterior_means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions with :math:`\\operatorname{Var}_x \\mathbb E_q[z_j] >` ``threshold``."""
    if posterior_means.shape[0] < 2:
        return 0
    return int((posterior_means.var(0) > threshold).sum())


@torch.no_grad()
def validation_elbo(
    vae: VAE, data: Any, *, num_samples: int = 1, seed: int = 0, batch_size: int = 1024
) -> float:
    """Mean ELBO per data point (the early-stopping criterion), cheap and reproducible.

    Unlike :func:`evaluate` it returns NaN or infinite values as they come: training's
    divergence guard looks for them.
    """
    return validation_bounds(vae, data, num_samples=num_samples, seed=seed, batch_size=batch_size)["elbo"]


def validation_bounds(
    vae: VAE, data: Any, *, num_samples: int = 1, seed: int = 0, batch_size: int = 1024
) -> dict[str, float]:
    r"""Two bounds on the mean :math:`\log p(x)` per point from the same ``num_samples`` draws each:
    ``"elbo"`` (the ELBO, its KL in closed form where one exists, its reconstruction term
    averaged over the draws) and ``"iwae"`` (the importance-weighted bound with K =
    ``num_samples``). Objectives pick theirs (:meth:`~pyro_vae.infer.objectives.Objective.validation_bound`).

    The draws are seeded by ``seed``: the same noise for every call, so that two weights
    are compared on common random numbers. NaN or infinite values are returned as they come.
    """
    result = _evaluate(
        vae,
        data,
        num_samples,
        chunk_size=batch_size * num_samples,
        seed=seed,
        log_abs_det_jacobian=0.0,
        kl_per_dim=False,
        distributed=None,
        progress=False,
    )
    return {"elbo": result["elbo"], "iwae": result["log_likelihood"]}
