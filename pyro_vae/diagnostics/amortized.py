r"""The amortized posterior :math:`q_\phi(z \mid x)` as ArviZ data, and its PSIS diagnostic.

Both functions draw :math:`z_k \sim q(z \mid x)`, :math:`k = 1..K`, with the machinery of
:func:`pyro_vae.evaluate` (the same traces, chunks and seeding), so for one seed and chunk
size they see the very draws ``evaluate`` sees, and memory stays bounded by the chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import logsumexp

from pyro_vae.data import as_tensor
from pyro_vae.diagnostics._convert import to_arviz
from pyro_vae.diagnostics.plots import plot_khat
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.infer.evaluation import chunk_plan, default_chunk_size, point_batches, sampling, weight_chunks
from pyro_vae.model import VAE
from pyro_vae.utils import positive_int, progress_bar

KHAT_THRESHOLDS = (0.5, 0.7, 1.0)
DEFAULT_PREDICTIVE_DRAWS = 100
DEFAULT_PRIOR_DRAWS = 500
# Posterior predictive draws are (draws, points, features): at most about this many numbers
# (64 MiB in float32) unless one draw per point is already more.
PREDICTIVE_ELEMENTS = 2**24


def _device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


def _fork(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _posterior_batches(
    vae: VAE,
    data: Any,
    num_samples: int,
    seed: int,
    chunk_size: int | None,
    *,
    keep_z: bool,
    num_predictive: int = 0,
    progress: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Per chunk of data points: the log weights of ``num_samples`` draws from q, and more.

    Yields numpy arrays ``log_w`` (log p(x, z) - log q(z|x)), ``log_px_z``, ``lp``
    (log p(x, z)), each ``(K, n)``, ``x`` ``(n, D)``, and with ``keep_z`` the draws
    ``z`` ``(K, n, L)`` and ``x_pred`` ``(num_predictive, n, D)``, decoder draws at the
    first ``num_predictive`` of them. The predictive draws use their own seed, so that
    the draws of ``z`` are those of :func:`pyro_vae.evaluate` with the same seed.
    """
    k_chunk, n_chunk = chunk_plan(num_samples, default_chunk_size(vae) if chunk_size is None else chunk_size)
    device = _device(vae)
    with torch.no_grad(), sampling(vae, seed, device):
        bar = progress_bar(desc="drawing from q(z|x)", unit="pt", enabled=progress, leave=False)
        for batch, x in enumerate(point_batches(vae, data, n_chunk, device)):
            parts: dict[str, list[torch.Tensor]] = {"log_w": [], "log_px_z": [], "lp": [], "z": []}
            for w in weight_chunks(vae, x, num_samples, k_chunk):
                parts["log_w"].append(w.log_w)
                parts["log_px_z"].append(w.log_px_z)
                parts["lp"].append(w.log_px_z + w.log_pz)
                if keep_z:
                    parts["z"].append(w.z)
            out = {k: torch.cat(v).cpu().numpy() for k, v in parts.items() if v}
            out["x"] = x.reshape(x.shape[0], -1).cpu().numpy()  # images: their pixels as features
            if keep_z and num_predictive > 0:
                z = torch.cat(parts["z"])[:num_predictive]
                with _fork(device):
                    torch.manual_seed(seed + 1 + batch)
                    out["x_pred"] = vae.decode(z).sample().flatten(2).cpu().numpy()
            bar.update(x.shape[0])
            yield out
        bar.close()


def _check_labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.shape != (n,):
        raise DataError(f"labels must have one entry per data point ({n}), got shape {labels.shape}")
    return labels


def _check_index(index: Any, n: int) -> np.ndarray:
    if index is None:
        return np.arange(n)
    index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
    if index.shape != (n,):
        raise DataError(f"index must have one entry per data point ({n}), got shape {index.shape}")
    return index


def to_inference_data(
    vae: VAE,
    x: Any,
    num_samples: int = 500,
    *,
    num_predictive: int | None = None,
    num_prior: int | None = None,
    labels: Any = None,
    index: Any = None,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> az.InferenceData:
    r"""The amortized posterior of ``vae`` at the points ``x``, as ArviZ ``InferenceData``.

    Groups (``chain`` has length 1: the draws are independent):

    * ``posterior``: ``z`` ``(chain, draw, obs, latent)``, :math:`z_k \sim q(z \mid x)`;
    * ``sample_stats``: ``log_weight`` :math:`= \log p(x, z_k) - \log q(z_k \mid x)`, the
      importance weights of :func:`pyro_vae.evaluate` and :func:`psis_diagnostic`,
      ``lp`` :math:`= \log p(x, z_k)` and ``log_px_given_z`` :math:`= \log p(x \mid z_k)`,
      each ``(chain, draw, obs)``;
    * ``posterior_predictive``: ``x`` ``(chain, draw, obs, feature)``,
      :math:`\tilde x \sim p(x \mid z_k)` for the first ``num_predictive`` draws;
    * ``observed_data``: ``x`` ``(obs, feature)`` (an image's pixels are its features, in
      C order; the ``input_shape`` attribute gives the shape back);
    * ``prior``: ``z`` ``(chain, draw, latent)`` from :math:`p(z)` and ``x``
      ``(chain, draw, feature)`` from :math:`p(x \mid z)` at those draws.

    ``obs`` is the position in ``x``, or ``index`` (for example the points' positions in
    the data set they were drawn from); ``labels`` (one per point) become a coordinate
    ``label`` along ``obs``. Save with ``idata.to_netcdf(path)``, read with
    ``az.from_netcdf(path)``.

    There is deliberately **no** ``log_likelihood`` group: each point has its own latent,
    so :math:`\log p(x_i \mid z_k)` at draws of :math:`q(z \mid x_i)` is not a likelihood
    over shared parameters, and ``az.loo`` / ``az.waic`` / ``az.compare`` on it would
    return the harmonic-mean estimate of :math:`\log p(x)` (the worst there is) under the
    name elpd_loo. Without the group they raise. Compare models by their held-out
    :math:`\log p(x_i)` instead (:func:`pyro_vae.app.compare.paired_differences`).

    Memory: the draws are made in chunks of at most ``chunk_size`` (sample, point) pairs
    (the default of :func:`pyro_vae.evaluate`); what is kept is ``K x n x latent_dim``
    numbers for ``z`` and ``K x n`` for each per-draw statistic, so choose ``K`` and the
    number of points accordingly. Posterior predictive draws hold ``D`` numbers each, so by
    default there are at most 100 of them per point and about ``2**24`` numbers in all
    (at least one per point); ``num_prior`` defaults to ``min(K, 500)``.
    """
    positive_int("num_samples", num_samples)
    if num_predictive is None:
        num_predictive = min(num_samples, DEFAULT_PREDICTIVE_DRAWS)
        cap_predictive = True
    else:
        num_predictive = min(positive_int("num_predictive", num_predictive), num_samples)
        cap_predictive = False
    num_prior = (
        min(num_samples, DEFAULT_PRIOR_DRAWS) if num_prior is None else positive_int("num_prior", num_prior)
    )
    x = as_tensor(x)  # kept whole anyway, as observed_data
    if cap_predictive and x.dim() >= 2 and x.numel() > 0:
        num_predictive = max(1, min(num_predictive, PREDICTIVE_ELEMENTS // x.numel()))
    batches = list(
        _posterior_batches(
            vae,
            x,
            num_samples,
            seed,
            chunk_size,
            keep_z=True,
            num_predictive=num_predictive,
            progress=progress,
        )
    )
    if not batches:
        raise DataError("no data: x is empty")

    def cat(key: str, axis: int) -> np.ndarray:
        return np.concatenate([b[key] for b in batches], axis=axis)

    observed = cat("x", 0)
    n = observed.shape[0]
    labels = _check_labels(labels, n)
    index = _check_index(index, n)
    with torch.no_grad(), sampling(vae, seed + 10_007, _device(vae)):  # prior draws: a stream of their own
        z_prior = vae.prior().sample((num_prior,))
        x_prior = vae.decode(z_prior).sample().flatten(1)
    groups = {
        "posterior": {"z": cat("z", 1)[None]},
        "sample_stats": {
            "log_weight": cat("log_w", 1)[None],
            "lp": cat("lp", 1)[None],
            "log_px_given_z": cat("log_px_z", 1)[None],
        },
        "posterior_predictive": {"x": cat("x_pred", 1)[None]},
        "observed_data": {"x": observed},
        "prior": {"z": z_prior.cpu().numpy()[None], "x": x_prior.cpu().numpy()[None]},
    }
    dims = {
        "posterior": {"z": ["obs", "latent"]},
        "sample_stats": {"log_weight": ["obs"], "lp": ["obs"], "log_px_given_z": ["obs"]},
        "posterior_predictive": {"x": ["obs", "feature"]},
        "observed_data": {"x": ["obs", "feature"]},
        "prior": {"z": ["latent"], "x": ["feature"]},
    }
    coords = {"obs": index, "latent": np.arange(vae.latent_dim), "feature": np.arange(vae.input_dim)}
    return to_arviz(groups, coords, dims, obs_labels=labels, attrs=_model_attrs(vae, num_samples=num_samples))


def _model_attrs(vae: VAE, **extra: int | float | str) -> dict[str, int | float | str]:
    from pyro_vae.version import __version__

    return {
        "pyro_vae_version": __version__,
        "likelihood": vae.likelihood.name,
        "prior": vae.prior.name,
        "latent_dim": vae.latent_dim,
        "input_dim": vae.input_dim,
        "input_shape": str(tuple(vae.input_shape)),  # "feature" runs over its pixels in C order
        "network": vae.network,
        **extra,
    }


# --------------------------------------------------------------------------- PSIS


@dataclass
class PsisResult:
    r"""Per data point: the Pareto :math:`\hat k` of the importance weights and two log p(x) estimates.

    ``khat`` (``inf`` where too few draws were made to fit a tail, ``NaN`` where the
    largest weights are all equal, so that there is no tail), ``log_px`` the PSIS estimate,
    ``log_px_is`` the plain importance-sampled one (what :func:`pyro_vae.evaluate`
    reports), ``index`` the points' positions, ``labels`` their labels or ``None``.
    """

    khat: np.ndarray
    log_px: np.ndarray
    log_px_is: np.ndarray
    num_samples: int
    index: np.ndarray
    labels: np.ndarray | None = None

    def share_above(self, threshold: float) -> float:
        """The share of points with :math:`\\hat k >` ``threshold``."""
        return float(np.mean(self.khat > threshold))

    def worst(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` points with the largest :math:`\\hat k`, largest first."""
        order = _worst_first(self.khat)[:n]
        return [
            {
                "index": int(self.index[i]),
                "label": None if self.labels is None else _json_number(self.labels[i]),
                "khat": _json_number(self.khat[i]),
                "log_px_psis": _json_number(self.log_px[i]),
                "log_px_is": _json_number(self.log_px_is[i]),
            }
            for i in order
        ]

    def summary(self, worst: int = 10) -> dict[str, Any]:
        """A JSON-ready summary: shares above 0.5, 0.7 and 1.0, quantiles, the worst points."""
        fitted = self.khat[~np.isnan(self.khat)]
        return {
            "num_points": int(self.khat.size),
            "num_samples": self.num_samples,
            "share_khat_above": {str(t): self.share_above(t) for t in KHAT_THRESHOLDS},
            "khat_median": _json_number(np.median(fitted)) if fitted.size else None,
            "khat_max": _json_number(np.max(fitted)) if fitted.size else None,
            "num_khat_tail_too_short": int(np.isposinf(self.khat).sum()),
            "num_khat_constant_weights": int(np.isnan(self.khat).sum()),
            "log_px_psis_mean": _json_number(np.mean(self.log_px)),
            "log_px_is_mean": _json_number(np.mean(self.log_px_is)),
            "worst": self.worst(worst),
        }

    def to_dict(self, pointwise: bool = False) -> dict[str, Any]:
        """:meth:`summary`, and with ``pointwise`` the per-point values as lists."""
        out = self.summary()
        if pointwise:
            out["pointwise"] = {
                "index": [int(i) for i in self.index],
                "khat": [_json_number(v) for v in self.khat],
                "log_px_psis": [_json_number(v) for v in self.log_px],
                "log_px_is": [_json_number(v) for v in self.log_px_is],
            }
        return out

    def plot(self) -> Figure:
        """:math:`\\hat k` per point with the 0.5 / 0.7 / 1.0 thresholds."""
        return plot_khat(self)


def _worst_first(khat: np.ndarray) -> np.ndarray:
    """Indices by decreasing k-hat; constant weights (NaN) are the best case, so they come last."""
    return np.argsort(-np.nan_to_num(khat, nan=-np.inf), kind="stable")


def _json_number(v: Any) -> float | int | None:
    """A float or int for JSON; ``None`` for NaN and infinities (not valid JSON)."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None


def _psis(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(khat, log_px_psis, log_px_is)`` from log weights ``(n, K)``.

    ``az.psislw`` with ``normalize=False`` returns the smoothed log weights on their
    original scale (tail replaced by fitted generalized Pareto quantiles, truncated at the
    largest raw weight), so :math:`\log \hat p_\text{PSIS}(x) = \operatorname{logsumexp}_k
    \tilde w_k - \log K`: the logsumexp of the smoothed weights normalised by the raw sum,
    plus the raw log-sum.
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    k = log_weights.shape[-1]
    smoothed, khat = az.psislw(log_weights, reff=1.0, normalize=False)  # independent draws: reff = 1
    khat = np.atleast_1d(np.asarray(khat, dtype=np.float64)).copy()
    # psislw gives inf when fewer than 5 draws lie strictly above the tail's cutoff. With
    # enough draws that only happens when the largest weights tie: equal to float
    # precision, i.e. no tail at all (q is the posterior). Nothing to fit: NaN, as the
    # posterior package reports a constant tail.
    if math.ceil(min(k / 5, 3 * math.sqrt(k))) > 4:
        khat[np.isposinf(khat)] = np.nan
    log_k = math.log(k)
    return khat, logsumexp(smoothed, axis=-1) - log_k, logsumexp(log_weights, axis=-1) - log_k


def psis_diagnostic(
    vae: VAE,
    x: Any,
    num_samples: int = 1000,
    *,
    labels: Any = None,
    index: Any = None,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> PsisResult:
    r"""Can the importance-sampled :math:`\log p(x)` of each point be trusted? PSIS says.

    For each point, the ``num_samples`` importance weights
    :math:`w_k = p(x, z_k) / q(z_k \mid x)`, :math:`z_k \sim q(z \mid x)`, are smoothed by
    Pareto smoothed importance sampling (``az.psislw``): a generalized Pareto distribution
    is fitted to the largest weights, and its shape :math:`\hat k` estimates how heavy the
    tail of the weights is (Yao et al. 2018, "Yes, but did it work?: Evaluating variational
    inference"; Vehtari et al. 2024). The weights have finite moments of order below
    :math:`1 / k`, so:

    * :math:`\hat k < 0.5`: finite variance; the importance-sampled :math:`\log p(x)` that
      :func:`pyro_vae.evaluate` reports is reliable, and q is close to the posterior;
    * :math:`0.5 \le \hat k < 0.7`: infinite variance but finite mean; the estimate is
      usable but converges more slowly in K (PSIS helps);
    * :math:`\hat k \ge 0.7`: the estimate is unreliable: dominated by a few weights,
      biased low (it misses the mass q does not cover) and with possibly infinite
      variance, so a larger K barely helps; improve the guide (or use many more samples)
      before trusting ``log_likelihood`` for these points. :math:`\hat k > 1`: not even
      the mean exists.

    With K draws the reliable range ends a little below 0.7, at
    :math:`\min(1 - 1/\log_{10} K, 0.7)` (0.67 for K = 1000); the tail fit needs K of a
    few hundred or more to say much, and with K < 25 there are too few tail draws
    (:math:`\hat k = \infty`). Where q is the exact posterior the weights are all equal
    to float precision: no tail, and :math:`\hat k` is NaN (the estimate is exact).

    Returns :class:`PsisResult`: per point :math:`\hat k`, the PSIS estimate
    :math:`\log \frac1K \sum_k \tilde w_k` and the plain one :math:`\log \frac1K \sum_k
    w_k`; ``summary()`` gives the shares above 0.5, 0.7, 1.0 and the worst points,
    ``plot()`` the figure; ``index`` and ``labels`` name the points there. Draws are those of :func:`pyro_vae.evaluate` for the same
    ``seed`` and ``chunk_size``, and only ``K`` weights per point of one chunk are held at
    a time.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ConfigError(f"num_samples must be an integer >= 2 for PSIS, got {num_samples!r}")
    khat, log_px, log_px_is = [], [], []
    for batch in _posterior_batches(vae, x, num_samples, seed, chunk_size, keep_z=False, progress=progress):
        k, psis, plain = _psis(batch["log_w"].T)
        khat.append(k)
        log_px.append(psis)
        log_px_is.append(plain)
    if not khat:
        raise DataError("no data: x is empty")
    khat_all = np.concatenate(khat)
    n = khat_all.size
    return PsisResult(
        khat=khat_all,
        log_px=np.concatenate(log_px),
        log_px_is=np.concatenate(log_px_is),
        num_samples=num_samples,
        index=_check_index(index, n),
        labels=_check_labels(labels, n),
    )


def psis_from_inference_data(idata: az.InferenceData) -> PsisResult:
    """:func:`psis_diagnostic` from the ``log_weight`` of :func:`to_inference_data` (no new draws)."""
    if "sample_stats" not in idata.groups() or "log_weight" not in idata.sample_stats:
        raise DataError("idata has no sample_stats.log_weight: make it with to_inference_data")
    lw = idata.sample_stats["log_weight"].stack(__sample__=("chain", "draw")).transpose("obs", "__sample__")
    if lw.sizes["__sample__"] < 2:
        raise DataError("PSIS needs at least 2 draws per point")
    khat, log_px, log_px_is = _psis(lw.values)
    obs = idata.sample_stats["obs"]
    labels = obs["label"].values if "label" in obs.coords else None
    return PsisResult(
        khat=khat,
        log_px=log_px,
        log_px_is=log_px_is,
        num_samples=int(lw.sizes["__sample__"]),
        index=np.asarray(obs.values),
        labels=labels,
    )
