r"""The exact posterior :math:`p(z \mid x_i)` of single points by NUTS, against :math:`q(z \mid x_i)`.

With the decoder and prior held fixed, :math:`p(z \mid x_i) \propto p(z)\,p_\theta(x_i \mid z)`
is an ordinary low-dimensional posterior, and Pyro's NUTS samples it with the potential
:math:`-\log p(x_i, z)` from the VAE's one log-density seam
(:meth:`~pyro_vae.model.VAE.log_joint`, missing cells masked). Comparing its
draws with the encoder's Gaussian shows where amortized inference is off, and by how much.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import torch
from matplotlib.figure import Figure
from pyro.infer.mcmc import MCMC, NUTS

from pyro_vae.data import as_tensor
from pyro_vae.diagnostics._convert import to_arviz
from pyro_vae.diagnostics.amortized import (
    _check_index,
    _check_labels,
    _fork,
    _json_number,
    _model_attrs,
    psis_diagnostic,
)
from pyro_vae.diagnostics.plots import plot_nuts_overlay
from pyro_vae.errors import ConfigError
from pyro_vae.infer.evaluation import evaluate
from pyro_vae.model import VAE
from pyro_vae.utils import positive_int, progress_bar

DEFAULT_IS_SAMPLES = 10_000


@contextlib.contextmanager
def _fixed_networks(vae: VAE) -> Iterator[None]:
    """Eval mode and no gradients to any network parameter: NUTS differentiates in z alone."""
    was_training = vae.training
    flags = [(p, p.requires_grad) for p in vae.parameters()]
    vae.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        vae.train(was_training)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread while sampling: a single point's gradients are too small to share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _potential(vae: VAE, x_i: torch.Tensor, q_loc: torch.Tensor, q_scale: torch.Tensor):
    r"""NUTS's potential in :math:`u = (z - \mu_q) / \sigma_q`: :math:`-\log p(x_i, z(u))` from the
    VAE's one seam (:meth:`~pyro_vae.model.VAE.log_joint`), masked to ``x_i``'s observed cells.
    The affine map's Jacobian is a constant and is left out: it moves no draw."""

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        log_px_z, log_pz = vae.log_joint(q_loc + q_scale * params["z"], x_i)
        return -(log_px_z + log_pz).sum()

    return potential


# The entries of each point in NutsResult.to_dict: one number per point (under the
# attribute's name), and one per latent dimension (JSON key: attribute).
_POINT_NUMBERS = ("log_px", "elbo", "amortization_gap", "khat")
_POINT_ARRAYS = {
    "nuts_mean": "mean",
    "nuts_sd": "sd",
    "q_mean": "q_loc",
    "q_sd": "q_scale",
    "mcse_mean": "mcse_mean",
    "mcse_sd": "mcse_sd",
    "r_hat": "r_hat",
    "ess_bulk": "ess_bulk",
    "ess_tail": "ess_tail",
}


def _worst_convergence(r_hat: np.ndarray, ess_bulk: np.ndarray, ess_tail: np.ndarray) -> dict[str, Any]:
    """The largest r-hat and the smallest bulk and tail ESS (of one point, or of all)."""
    return {
        "r_hat_max": _json_number(np.max(r_hat)),
        "ess_bulk_min": _json_number(np.min(ess_bulk)),
        "ess_tail_min": _json_number(np.min(ess_tail)),
    }


@dataclass
class NutsResult:
    r"""NUTS draws of :math:`p(z \mid x_i)` for a few points, beside the encoder's :math:`q(z \mid x_i)`.

    Arrays are per point (first axis) and latent dimension (second): NUTS ``mean`` and
    ``sd`` with their Monte Carlo standard errors ``mcse_mean`` and ``mcse_sd``,
    ``ess_bulk``, ``ess_tail`` and ``r_hat``; the encoder's ``q_loc`` and ``q_scale``.
    Per point: ``divergences`` (after warm-up), ``stuck_chains`` (chains that never
    moved: every proposal rejected, r-hat is then NaN), ``seconds`` (sampling time, all chains),
    ``log_px`` (importance-sampled, ``num_is_samples`` draws), ``elbo``,
    ``amortization_gap`` :math:`= \log p(x_i) - \mathrm{ELBO}(x_i)` and ``khat``, the PSIS
    diagnostic of that ``log_px``. ``idata`` holds the draws (``posterior``,
    ``sample_stats`` with ``diverging`` and ``lp``, ``observed_data``, and the encoder's
    parameters and these numbers in ``constant_data``).
    """

    idata: az.InferenceData
    index: np.ndarray
    labels: np.ndarray | None
    mean: np.ndarray
    sd: np.ndarray
    mcse_mean: np.ndarray
    mcse_sd: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    r_hat: np.ndarray
    q_loc: np.ndarray
    q_scale: np.ndarray
    divergences: np.ndarray
    stuck_chains: np.ndarray
    seconds: np.ndarray
    log_px: np.ndarray
    elbo: np.ndarray
    amortization_gap: np.ndarray
    khat: np.ndarray
    num_chains: int
    warmup: int
    draws: int
    num_is_samples: int

    def summary(self) -> Any:
        """``az.summary`` of the NUTS draws (mean, sd, HDI, MCSE, bulk and tail ESS, r-hat)."""
        return az.summary(self.idata, var_names=["z"], kind="all")

    def mean_z_scores(self) -> np.ndarray:
        """(NUTS mean - q's mean) / the NUTS mean's Monte Carlo standard error."""
        return (self.mean - self.q_loc) / self.mcse_mean

    def sd_z_scores(self) -> np.ndarray:
        """(NUTS sd - q's sd) / the NUTS sd's Monte Carlo standard error."""
        return (self.sd - self.q_scale) / self.mcse_sd

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, and per point the comparison with q and the chains' health."""
        return {
            "num_chains": self.num_chains,
            "warmup": self.warmup,
            "draws": self.draws,
            "num_is_samples": self.num_is_samples,
            "seconds_per_point": float(np.mean(self.seconds)),
            **_worst_convergence(self.r_hat, self.ess_bulk, self.ess_tail),
            "divergences": int(np.sum(self.divergences)),
            "stuck_chains": int(np.sum(self.stuck_chains)),
            "points": [self._point_dict(i) for i in range(len(self.index))],
        }

    def _point_dict(self, i: int) -> dict[str, Any]:
        """Point ``i`` of :meth:`to_dict`: its chains' health, its numbers, its per-dimension arrays."""
        point = {
            "index": int(self.index[i]),
            "label": None if self.labels is None else _json_number(self.labels[i]),
            "seconds": float(self.seconds[i]),
            "divergences": int(self.divergences[i]),
            "stuck_chains": int(self.stuck_chains[i]),
            **_worst_convergence(self.r_hat[i], self.ess_bulk[i], self.ess_tail[i]),
        }
        point.update({key: _json_number(getattr(self, key)[i]) for key in _POINT_NUMBERS})
        for key, attribute in _POINT_ARRAYS.items():
            point[key] = [_json_number(v) for v in np.ravel(getattr(self, attribute)[i])]
        return point

    def plot(self, max_points: int = 4, max_dims: int = 6) -> Figure:
        """NUTS marginals against q's densities (and for 2-D latents, a scatter with q's ellipses)."""
        return plot_nuts_overlay(self, max_points=max_points, max_dims=max_dims)


def _run_chain(
    vae: VAE,
    x_i: torch.Tensor,
    q_loc: torch.Tensor,
    q_scale: torch.Tensor,
    init: torch.Tensor,
    warmup: int,
    draws: int,
    max_tree_depth: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""One NUTS chain in this process: draws ``(draws, L)``, divergence flags, adapted step size.

    NUTS moves in :math:`u = (z - \mu_q) / \sigma_q` (Pyro adds the constant Jacobian), so
    that warm-up starts on a posterior of roughly unit scale instead of one whose scales
    differ by orders of magnitude between dimensions; the target is unchanged.
    """
    kernel = NUTS(potential_fn=_potential(vae, x_i, q_loc, q_scale), max_tree_depth=max_tree_depth)
    mcmc = MCMC(
        kernel,
        num_samples=draws,
        warmup_steps=warmup,
        num_chains=1,
        initial_params={"z": (init - q_loc) / q_scale},  # MCMC starts in the sampler's space
        disable_progbar=not progress,
    )
    mcmc.run()
    z = (q_loc + q_scale * mcmc.get_samples()["z"]).reshape(draws, -1)
    diverging = np.zeros(draws, dtype=bool)
    for t in mcmc.diagnostics().get("divergences", {}).get("chain 0", []):
        if 0 <= t < draws:
            diverging[t] = True
    return z.cpu().numpy(), diverging, float(kernel.step_size)


def nuts_posterior(
    vae: VAE,
    x: Any,
    num_chains: int = 2,
    warmup: int = 500,
    draws: int = 500,
    *,
    seed: int = 0,
    index: Sequence[int] | None = None,
    labels: Any = None,
    num_is_samples: int = DEFAULT_IS_SAMPLES,
    init_scale: float = 2.0,
    max_tree_depth: int = 10,
    progress: bool = False,
) -> NutsResult:
    r"""Sample :math:`p(z \mid x_i) \propto p(z)\,p_\theta(x_i \mid z)` by NUTS for each row of ``x``.

    Each point is its own posterior: NUTS (Pyro's ``NUTS`` with step size and diagonal
    mass matrix adapted in ``warmup`` steps, no JIT) runs on the VAE's log-density with
    ``x_i`` observed, decoder and prior fixed (no gradients reach the network parameters), in the
    coordinates :math:`u = (z - \mu_q) / \sigma_q` standardized by the encoder, which
    makes warm-up cheaper and leaves the target unchanged.
    ``num_chains`` chains run one after another in this process with one torch thread
    each (no multiprocessing, so nothing is pickled), started at
    :math:`\mu_q + \text{init\_scale}\cdot\sigma_q\,\varepsilon`: dispersed around q, so
    that r-hat can reveal chains that have not mixed. Torch's thread count is restored
    afterwards.

    The comparison with the encoder's :math:`q(z \mid x_i) = \mathcal N(\mu_q, \sigma_q^2)`:
    NUTS means and standard deviations beside :math:`\mu_q, \sigma_q` (agreement is judged
    against the Monte Carlo standard errors, from the effective sample sizes), and the gap

    .. math::
        \log p(x_i) - \mathrm{ELBO}(x_i) = \mathrm{KL}\big(q(z \mid x_i)\,\|\,p(z \mid x_i)\big) \ge 0,

    with :math:`\log p(x_i)` importance-sampled with ``num_is_samples`` draws and the ELBO
    as :func:`pyro_vae.evaluate` computes them (``khat`` says whether that
    :math:`\log p(x_i)` is reliable). This is the whole gap of amortized inference for
    the point, the amortization gap proper plus the approximation gap of the diagonal
    Gaussian family (Cremer et al. 2018 call the sum the inference gap).

    ``x`` is one point ``(D,)`` or a few ``(m, D)``; ``index`` names them (positions in
    a data set) and ``labels`` adds their labels. Cost: ``num_chains * (warmup + draws)``
    NUTS iterations of several gradient evaluations each, about 1.2 ms per gradient on CPU
    (Pyro's overhead, more than the networks): measured 22 s per point for the digits
    model and 35 s for a 784-300-300-40 MNIST model with the defaults, half that with
    ``warmup=200, draws=300`` (``docs/diagnostics.md``).
    """
    x = as_tensor(x)
    if x.dim() == 1:
        x = x[None]
    vae.check_data(x)
    positive_int("num_chains", num_chains)
    positive_int("draws", draws)
    positive_int("num_is_samples", num_is_samples)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be a non-negative integer, got {warmup!r}")
    m = x.shape[0]
    index = _check_index(index, m)
    labels = _check_labels(labels, m)
    device = next(vae.parameters()).device
    x = x.to(device)
    z_draws = np.empty((num_chains, draws, m, vae.latent_dim), dtype=np.float32)
    diverging = np.zeros((num_chains, draws, m), dtype=bool)
    step_size = np.zeros((num_chains, draws, m))
    seconds = np.zeros(m)
    with torch.no_grad():
        q_loc, q_scale = vae.encode(x)
    with _fixed_networks(vae), _one_thread(), _fork(device):
        for i in progress_bar(range(m), desc="NUTS", unit="pt", enabled=progress, leave=False):
            start = time.perf_counter()
            for c in range(num_chains):
                torch.manual_seed(seed + 7919 * i + c)
                init = q_loc[i : i + 1] + init_scale * q_scale[i : i + 1] * torch.randn_like(q_loc[i : i + 1])
                z, div, eps = _run_chain(
                    vae,
                    x[i : i + 1],
                    q_loc[i : i + 1],
                    q_scale[i : i + 1],
                    init,
                    warmup,
                    draws,
                    max_tree_depth,
                    progress,
                )
                z_draws[c, :, i] = z
                diverging[c, :, i] = div
                step_size[c, :, i] = eps
            seconds[i] = time.perf_counter() - start
        with torch.no_grad():
            zt = torch.as_tensor(z_draws, device=device)
            lp = sum(vae.log_joint(zt, x)).cpu().numpy()
    ev = evaluate(vae, x, num_is_samples, seed=seed, kl_per_dim=False, distributed=False)
    log_px = ev["pointwise"]["log_likelihood"].double().numpy()
    elbo = ev["pointwise"]["elbo"].double().numpy()
    khat = psis_diagnostic(vae, x, num_is_samples, seed=seed).khat
    q_loc, q_scale = q_loc.cpu().numpy(), q_scale.cpu().numpy()
    idata = to_arviz(
        {
            "posterior": {"z": z_draws},
            "sample_stats": {"diverging": diverging, "lp": lp, "step_size": step_size},
            "observed_data": {"x": x.reshape(x.shape[0], -1).cpu().numpy()},
            "constant_data": {
                "q_loc": q_loc,
                "q_scale": q_scale,
                "log_px": log_px,
                "elbo": elbo,
                "amortization_gap": log_px - elbo,
                "khat": khat,
            },
        },
        coords={"obs": index, "latent": np.arange(vae.latent_dim), "feature": np.arange(vae.input_dim)},
        dims={
            "posterior": {"z": ["obs", "latent"]},
            "sample_stats": {k: ["obs"] for k in ("diverging", "lp", "step_size")},
            "observed_data": {"x": ["obs", "feature"]},
            "constant_data": {
                "q_loc": ["obs", "latent"],
                "q_scale": ["obs", "latent"],
                **{k: ["obs"] for k in ("log_px", "elbo", "amortization_gap", "khat")},
            },
        },
        obs_labels=labels,
        attrs=_model_attrs(
            vae,
            sampler="NUTS",
            num_chains=num_chains,
            warmup=warmup,
            draws=draws,
            num_is_samples=num_is_samples,
        ),
    )
    post = idata.posterior["z"]

    def stat(ds: Any) -> np.ndarray:
        return ds["z"].transpose("obs", "latent").values

    return NutsResult(
        idata=idata,
        index=index,
        labels=labels,
        mean=post.mean(("chain", "draw")).transpose("obs", "latent").values,
        sd=post.std(("chain", "draw"), ddof=1).transpose("obs", "latent").values,
        mcse_mean=stat(az.mcse(idata, var_names=["z"], method="mean")),
        mcse_sd=stat(az.mcse(idata, var_names=["z"], method="sd")),
        ess_bulk=stat(az.ess(idata, var_names=["z"], method="bulk")),
        ess_tail=stat(az.ess(idata, var_names=["z"], method="tail")),
        r_hat=stat(az.rhat(idata, var_names=["z"])),
        q_loc=q_loc,
        q_scale=q_scale,
        divergences=diverging.sum((0, 1)),
        stuck_chains=np.all(z_draws == z_draws[:, :1], axis=(1, 3)).sum(0),
        seconds=seconds,
        log_px=log_px,
        elbo=elbo,
        amortization_gap=log_px - elbo,
        khat=khat,
        num_chains=num_chains,
        warmup=warmup,
        draws=draws,
        num_is_samples=num_is_samples,
    )
