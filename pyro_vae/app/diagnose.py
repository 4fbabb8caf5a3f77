"""``pyro-vae diagnose RUN_DIR``: the diagnostics of a saved run, written beside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pyro_vae.diagnostics.amortized import _worst_first, psis_from_inference_data, to_inference_data
from pyro_vae.diagnostics.nuts import DEFAULT_IS_SAMPLES, nuts_posterior
from pyro_vae.diagnostics.plots import plot_ppc
from pyro_vae.errors import ConfigError, RunDirectoryError
from pyro_vae.io import atomic_write, atomic_write_json, save_figure
from pyro_vae.model import CONFIG_FILE, WEIGHTS_FILE
from pyro_vae.settings import MAX_SEED
from pyro_vae.utils import positive_int

DIAGNOSTICS_FILE = "diagnostics.nc"
NUTS_FILE = "nuts.nc"
REPORT_FILE = "diagnostics.json"
FIGURES = ("khat.png", "nuts_overlay.png", "ppc.png")


def diagnose_run(
    run_dir: str | Path,
    *,
    num_samples: int = 1000,
    num_points: int = 200,
    nuts_points: int = 2,
    nuts_chains: int = 2,
    nuts_warmup: int = 500,
    nuts_draws: int = 500,
    num_is_samples: int = DEFAULT_IS_SAMPLES,
    split: str | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    echo=print,
) -> dict[str, Any]:
    """Diagnose the amortized posterior of a run on ``num_points`` points of a split.

    The points are drawn at random (seeded by ``seed``; all of them when the split is not
    larger), and named by their positions in the split.

    Writes into ``out`` (default: the run directory), each file atomically:
    ``diagnostics.nc`` (:func:`~pyro_vae.diagnostics.to_inference_data` with
    ``num_samples`` draws per point), ``nuts.nc`` (the NUTS posteriors), ``diagnostics.json``
    (the k-hat summary and per-point k-hat, NUTS r-hat, ESS and divergences, the gaps
    log p(x) - ELBO, timings), ``khat.png``, ``nuts_overlay.png`` and ``ppc.png``. NUTS runs on the ``nuts_points``
    points with the largest k-hat: those whose reported log-likelihood is least
    trustworthy. The data split is reloaded as ``pyro-vae evaluate`` does. Returns the
    report (the content of ``diagnostics.json``).
    """
    from pyro_vae.app.run import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a run directory (no {' or '.join(missing)}): make one with pyro-vae train --out DIR"
        )
    positive_int("--num-samples (K)", num_samples, 2)
    positive_int("--num-points", num_points, 1)
    positive_int("--nuts-points", nuts_points, 0)
    positive_int("--nuts-chains", nuts_chains, 1)
    positive_int("--nuts-warmup", nuts_warmup, 0)
    positive_int("--nuts-draws", nuts_draws, 1)
    positive_int("--is-samples", num_is_samples, 1)
    positive_int("--seed", seed, 0)
    if seed > MAX_SEED:
        raise ConfigError(f"--seed must be between 0 and 2**63 - 1 ({MAX_SEED}), got {seed}")
    if nuts_points > num_points:
        raise ConfigError(f"--nuts-points ({nuts_points}) cannot exceed --num-points ({num_points})")
    cfg, vae, splits = load_run(run_dir, split=split, data_dir=data_dir)
    out = run_dir if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} is a file, not a directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    x, labels = splits.split(cfg.eval.split)
    # A seeded random subset: some splits are ordered (binarized MNIST's test split by digit).
    chosen = np.arange(x.shape[0])
    if num_points < x.shape[0]:
        chosen = np.sort(np.random.default_rng(seed).choice(x.shape[0], num_points, replace=False))
    x = x[chosen]
    labels = None if labels is None else labels[chosen]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    idata = to_inference_data(vae, x, num_samples, labels=labels, index=chosen, seed=seed, progress=progress)
    timings["inference_data_s"] = time.perf_counter() - start
    start = time.perf_counter()
    psis = psis_from_inference_data(idata)
    timings["psis_s"] = time.perf_counter() - start

    nuts = None
    if nuts_points:
        worst = np.sort(_worst_first(psis.khat)[:nuts_points])  # positions in x
        start = time.perf_counter()
        nuts = nuts_posterior(
            vae,
            x[worst],
            num_chains=nuts_chains,
            warmup=nuts_warmup,
            draws=nuts_draws,
            seed=seed,
            index=chosen[worst],
            labels=None if labels is None else labels[worst],
            num_is_samples=num_is_samples,
            progress=progress,
        )
        timings["nuts_s"] = time.perf_counter() - start
        timings["nuts_per_point_s"] = float(np.mean(nuts.seconds))

    start = time.perf_counter()
    written = [DIAGNOSTICS_FILE]
    atomic_write(out / DIAGNOSTICS_FILE, lambda tmp: idata.to_netcdf(str(tmp)))
    if nuts is not None:
        atomic_write(out / NUTS_FILE, lambda tmp: nuts.idata.to_netcdf(str(tmp)))
        written.append(NUTS_FILE)
    figures = {"khat.png": psis.plot(), "ppc.png": plot_ppc(idata, splits.image_shape, seed=seed)}
    if nuts is not None:
        figures["nuts_overlay.png"] = nuts.plot()
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=110)
    timings["write_s"] = time.perf_counter() - start

    report = {
        "run_dir": str(run_dir),
        "split": cfg.eval.split,
        "num_points": int(x.shape[0]),
        "num_samples": num_samples,
        "guide": vae.variational.spec(),  # k-hat judges this guide's q(z|x) (compare --guides trains others)
        "psis": psis.to_dict(pointwise=True),
        "nuts": None if nuts is None else nuts.to_dict(),
        "timings": timings,
    }
    atomic_write_json(out / REPORT_FILE, report)
    written += [REPORT_FILE, *sorted(figures)]
    for line in report_lines(report):
        echo(line)
    echo(f"wrote   {out}/: {' '.join(written)}")
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    """The short printed report of :func:`diagnose_run`."""
    p = report["psis"]
    shares = p["share_khat_above"]
    worst = ", ".join(
        f"#{w['index']}" + ("" if w["label"] is None else f" (label {w['label']})") + f" k={_fmt(w['khat'])}"
        for w in p["worst"][:5]
    )
    lines = [
        f"psis    {report['split']}, {p['num_points']} points, K={p['num_samples']}, guide "
        f"{report.get('guide', {}).get('name', 'diagonal')}: k-hat > 0.7 for "
        f"{shares['0.7']:.1%} of points (> 0.5: {shares['0.5']:.1%}, > 1.0: {shares['1.0']:.1%}); "
        f"log p(x) PSIS {_fmt(p['log_px_psis_mean'])}, plain {_fmt(p['log_px_is_mean'])} nats",
        f"worst   {worst}",
    ]
    nuts = report["nuts"]
    if nuts is not None:
        lines.append(
            f"nuts    {nuts['num_chains']} chains x {nuts['draws']} draws ({nuts['warmup']} warm-up), "
            f"{nuts['seconds_per_point']:.1f} s per point: r-hat max {_fmt(nuts['r_hat_max'], 3)}, "
            f"ESS bulk min {_fmt(nuts['ess_bulk_min'], 0)}, tail min {_fmt(nuts['ess_tail_min'], 0)}, "
            f"{nuts['divergences']} divergences"
            + (f", {nuts['stuck_chains']} chains stuck (more warm-up?)" if nuts["stuck_chains"] else "")
        )
        for pt in nuts["points"]:
            lines.append(
                f"gap     #{pt['index']}: log p(x) - ELBO = {_fmt(pt['amortization_gap'])} nats "
                f"(log p(x) {_fmt(pt['log_px'])}, K={nuts['num_is_samples']}, k-hat {_fmt(pt['khat'])})"
            )
    return lines


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
