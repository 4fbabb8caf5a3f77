r"""Prior comparison: the same VAE trained under each prior, side by side.

:func:`compare_priors` trains one run per prior with :func:`~pyro_vae.app.run.train_run`
(same data split, seed, networks, likelihood and training budget; only ``model.prior``
differs), keeps every run under ``OUT/runs/<name>/`` (each repeatable from its
``config.json``) and writes to ``OUT``:

* ``comparison.md``, ``comparison.csv``, ``comparison.json``: one row per prior with the
  importance-sampled log p(x), ELBO, KL, reconstruction, active units and training time
  (the JSON adds the seed, the budget and the base config), and the *paired* comparison:
  each prior's difference in log p(x) to the best one on the same test points, with the
  standard error of that paired difference (:func:`paired_differences`, by ``az.compare``);
* ``samples.png``: decoder means at prior draws, one panel per prior;
* ``latent_means.png``: posterior means of the test set coloured by label;
* ``kl_per_dim.png``: KL per latent dimension, per prior;
* ``prior_vs_aggregate_posterior.png`` (2-D latents only): the prior's log density beside
  that of the aggregate posterior :math:`\frac1N\sum_n q(z \mid x_n)`, on one grid.

``compare_priors(..., guides=[...])`` (``pyro-vae compare --guides diagonal,lowrank,flow``)
compares guides (:mod:`pyro_vae.distributions.guides`) the same way instead: one run per guide, the prior
the base config's, the first column naming the guide.

A prior whose run fails (for example :class:`~pyro_vae.infer.training.TrainingDiverged`) gets a
row with its error and the others go on. The comparison is written in ``.OUT.partial``
beside ``OUT`` (its tables rewritten after every prior, to follow) and moved into place
when whole, under the rules of :mod:`pyro_vae.app.rundir`: an existing ``OUT`` is replaced
only with ``overwrite`` and stays whole until then.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pyro.distributions as dist
import torch
import xarray as xr
from matplotlib.figure import Figure

from pyro_vae import description
from pyro_vae.app import plotting
from pyro_vae.app.config import RunConfig
from pyro_vae.app.run import load_data, read_pointwise, train_run
from pyro_vae.app.rundir import RunDirectory
from pyro_vae.data import DataSplits
from pyro_vae.distributions import guides as guide_registry
from pyro_vae.distributions import priors as prior_registry
from pyro_vae.errors import ConfigError, ConfigTypeError, DataError
from pyro_vae.infer.training import batch_size_for, fit
from pyro_vae.io import atomic_write_text, save_figure
from pyro_vae.model import VAE
from pyro_vae.utils import available_cpus

DEFAULT_NORMAL_SCALES = (0.5, 2.0, 5.0)
TABLES = ("comparison.md", "comparison.csv", "comparison.json")
FIGURES = ("samples.png", "latent_means.png", "kl_per_dim.png", "prior_vs_aggregate_posterior.png")
COLUMNS = (
    "prior",
    "name",
    "options",
    "log_likelihood",
    "log_likelihood_se",
    "diff_to_best",
    "diff_to_best_se",
    "elbo",
    "kl",
    "reconstruction",
    "gap",
    "active_units",
    "latent_dim",
    "bits_per_dim",
    "epochs",
    "best_epoch",
    "stopped_early",
    "train_seconds",
    "run_seconds",
    "run_dir",
    "error",
)
GRID_POINTS = 120  # per axis of the density figure
LOG_DENSITY_RANGE = 10.0  # nats of log density that the density figure's colours span


def default_config(quick: bool = False) -> RunConfig:
    """The comparison's defaults: bundled digits, a 2-D latent, a budget of a few minutes for all priors.

    A 2-D latent shows the codes without projection and allows the density figure.
    ``quick=True`` is a smoke run (see :func:`make_quick`).
    """
    cfg = RunConfig().replace("model", latent_dim=2).replace("train", epochs=200, patience=50)
    return make_quick(cfg) if quick else cfg


def make_quick(cfg: RunConfig) -> RunConfig:
    """``cfg`` shrunk to a smoke run of a second or two per prior on digits."""
    cfg = cfg.replace("model", hidden=[64]).replace("train", epochs=10, patience=None)
    return cfg.replace("eval", num_samples=100)


@dataclass(frozen=True)
class PriorEntry:
    """One column of the comparison: a prior spec, its label in tables and its run directory name."""

    label: str
    slug: str
    spec: dict[str, Any]
    setting: str = "prior"  # the model setting it varies: "prior", or "guide" (compare --guides)

    def changes(self) -> dict[str, Any]:
        """The model settings of this entry's run (``prior`` and ``prior_options``, or the guide's)."""
        return {self.setting: self.spec["name"], f"{self.setting}_options": dict(self.spec["options"])}


def _format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _entry(name: str, options: dict[str, Any]) -> PriorEntry:
    if not options:
        return PriorEntry(name, name, {"name": name, "options": {}})
    label = f"{name}({', '.join(f'{k}={_format_value(v)}' for k, v in options.items())})"
    slug = name + "_" + "_".join(f"{k}{_format_value(v)}" for k, v in options.items())
    return PriorEntry(label, re.sub(r"[^A-Za-z0-9._-]+", "-", slug), {"name": name, "options": dict(options)})


def resolve_priors(
    priors: Sequence[str | dict[str, Any]] | None = None, normal_scales: Sequence[float] | None = None
) -> list[PriorEntry]:
    """The priors to compare, validated; the bare name ``normal`` becomes one entry per scale.

    ``priors`` holds registered names or ``{"name", "options"}`` specs (default: every
    registered prior). ``normal_scales`` defaults to :data:`DEFAULT_NORMAL_SCALES`; an
    empty list runs ``normal`` with its default options.
    """
    names = prior_registry.names()
    if priors is None:
        priors = names
    if isinstance(priors, str):
        raise ConfigTypeError("priors must be a list of prior names or specs, not one string")
    if len(priors) == 0:
        raise ConfigError(f"no priors to compare; choose from: {', '.join(names)}")
    scales = _normal_scales(normal_scales, priors)
    entries = [entry for item in priors for entry in _entries_of(item, scales)]
    _check_entries(entries)
    return entries


def resolve_guides(guides: Sequence[str | dict[str, Any]]) -> list[PriorEntry]:
    """The guides to compare (:mod:`pyro_vae.distributions.guides`), validated: names or ``{"name", "options"}`` specs.

    Each entry's run sets ``model.guide`` and ``model.guide_options``; everything else,
    the prior included, is the base config's.
    """
    if isinstance(guides, str):
        raise ConfigTypeError("guides must be a list of guide names or specs, not one string")
    if len(guides) == 0:
        raise ConfigError(f"no guides to compare; choose from: {', '.join(guide_registry.names())}")
    entries = []
    for item in guides:
        if not isinstance(item, (str, dict)):
            raise ConfigTypeError(f"a guide must be a name or a {{'name', 'options'}} dict, got {item!r}")
        try:
            spec = guide_registry.create(item).spec()  # an unknown name or a bad option fails here
        except (ValueError, TypeError) as err:
            raise ConfigError(f"guide {item!r}: {err}") from None
        options = item.get("options", {}) if isinstance(item, dict) else {}
        entries.append(dataclasses.replace(_entry(spec["name"], options), setting="guide"))
    if len({e.slug for e in entries}) != len(entries):
        raise ConfigError(f"a guide is listed twice: {[e.label for e in entries]}; list each guide once")
    return entries


def _normal_scales(
    normal_scales: Sequence[float] | None, priors: Sequence[str | dict[str, Any]]
) -> tuple[float, ...]:
    """The validated scales of ``normal`` (default :data:`DEFAULT_NORMAL_SCALES`)."""
    scales = DEFAULT_NORMAL_SCALES if normal_scales is None else tuple(normal_scales)
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (s > 0 and math.isfinite(s)):
            raise ConfigError(f"normal scales must be positive finite numbers, got {s!r}")
    if len(set(scales)) != len(scales):
        raise ConfigError(f"normal scales listed twice: {list(scales)}; list each scale once")
    if normal_scales and "normal" not in priors:
        raise ConfigError(
            "normal scales were given but 'normal' is not among the priors to compare: add normal to "
            "--priors, or leave --normal-scales out"
        )
    return scales


def _entries_of(item: str | dict[str, Any], scales: tuple[float, ...]) -> list[PriorEntry]:
    """The entries of one listed prior: a name (``normal``: one per scale) or a spec dict."""
    if isinstance(item, str):
        prior_registry.REGISTRY.get(item)  # an unknown name lists the registered ones
        if item == "normal" and scales:
            return [_entry("normal", {"scale": float(s)}) for s in scales]
        return [_entry(item, {})]
    if isinstance(item, dict):
        spec = prior_registry.create(item).spec()  # validates the name and the options
        return [_entry(spec["name"], item.get("options", {}))]
    raise ConfigTypeError(f"a prior must be a name or a {{'name', 'options'}} dict, got {item!r}")


def _check_entries(entries: list[PriorEntry]) -> None:
    """Every entry builds its prior, and none is listed twice."""
    for e in entries:
        try:
            prior_registry.create(e.spec)  # bad option values fail here, before any training
        except (ValueError, TypeError) as err:
            raise ConfigError(f"prior {e.label}: {err}") from None
    seen: set[str] = set()
    for e in entries:
        if e.slug in seen:
            raise ConfigError(f"prior {e.label} is listed twice; list each prior once")
        seen.add(e.slug)


@dataclass
class PriorResult:
    """One prior's run: its metrics (``None`` if it failed) or its error."""

    entry: PriorEntry
    run_dir: Path
    metrics: dict[str, Any] | None = None
    error: str | None = None
    wall_seconds: float = 0.0
    pointwise: np.ndarray | None = None  # each test point's log p(x), for paired differences

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self, latent_dim: int) -> dict[str, Any]:
        m = self.metrics or {}
        training = m.get("training", {})
        row = {
            "prior": self.entry.label,
            "name": self.entry.spec["name"],
            "options": self.entry.spec["options"],
            "log_likelihood": m.get("log_likelihood"),
            "log_likelihood_se": m.get("log_likelihood_se"),
            "diff_to_best": None,
            "diff_to_best_se": None,
            "elbo": m.get("elbo"),
            "kl": m.get("kl"),
            "reconstruction": m.get("reconstruction"),
            "gap": m["log_likelihood"] - m["elbo"] if m else None,
            "active_units": m.get("active_units"),
            "latent_dim": latent_dim,
            "bits_per_dim": m.get("bits_per_dim"),
            "epochs": training.get("epochs"),
            "best_epoch": training.get("best_epoch"),
            "stopped_early": training.get("stopped_early"),
            "train_seconds": training.get("seconds"),
            "run_seconds": self.wall_seconds,  # training, evaluation and the run's figures
            "run_dir": str(self.run_dir),
            "error": self.error,
        }
        # JSON has no NaN: a missing number is null in JSON and empty in CSV.
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


@dataclass
class ComparisonResult:
    """What :func:`compare_priors` did: per-prior results and the files it wrote."""

    out_dir: Path
    config: RunConfig
    results: list[PriorResult]
    summary: dict[str, Any]
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows = [r.row(self.config.model.latent_dim) for r in self.results]
        scored = {r.entry.label: r.pointwise for r in self.results if r.ok and r.pointwise is not None}
        paired = paired_differences(scored) if len(scored) > 1 else {}
        for row in rows:
            row.update(paired.get(row["prior"], {}))
        return rows

    @property
    def failed(self) -> list[PriorResult]:
        return [r for r in self.results if not r.ok]

    def markdown(self) -> str:
        return comparison_markdown(self.rows, self.summary, self.summary.get("figures", []))


def _silent(*args: Any, **kwargs: Any) -> None:
    pass


def _check_shared_settings(cfg: RunConfig, splits: DataSplits, first: PriorEntry) -> str:
    """Fail before the first run on settings every run shares; returns the likelihood's name and why."""
    t = cfg.validate().train
    splits.split(cfg.eval.split)
    probe = cfg.replace("model", **first.changes())
    resolved = description.resolve(probe.model, splits)  # latent size, widths, likelihood, missing cells
    vae = description.build(resolved)
    name, reason = vae.likelihood.name, resolved.likelihood_reason
    vae.check_data(splits.train)
    # One throw-away step: the first training in a process pays one-off start-up costs
    # (about a second), which would otherwise count against the first prior's training time.
    fit(vae, splits.train[: min(64, len(splits.train))], None, t, epochs=1, batch_size=64, progress=False)
    return name + (f" (auto: {reason})" if reason else "")


def compare_priors(
    base_config: RunConfig,
    priors: Sequence[str | dict[str, Any]] | None = None,
    out_dir: str | Path = "runs/compare",
    *,
    normal_scales: Sequence[float] | None = None,
    progress: bool = True,
    echo: Callable[..., None] = print,
    command: str | None = None,
    guides: Sequence[str | dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> ComparisonResult:
    """Train ``base_config`` once per prior and write the comparison's tables and figures to ``out_dir``.

    Args:
        base_config: data, networks, likelihood, training budget, seed and evaluation shared by
            every run; its ``model.prior`` and ``model.prior_options`` are replaced per run.
        priors: registered names or ``{"name", "options"}`` specs (default: every
            registered prior, so newly registered ones join automatically).
        out_dir: where ``comparison.{md,csv,json}``, the figures and ``runs/<prior>/`` go,
            under train's run-directory rules (:mod:`pyro_vae.app.rundir`): the comparison is
            written in ``.NAME.partial`` beside it and moved into place when whole.
        normal_scales: the scales at which the bare name ``normal`` runs (default 0.5, 2, 5).
        progress: progress bars while training and evaluating.
        echo: receives one line per prior and the final table.
        command: the command line that ran the comparison, recorded in the tables.
        overwrite: replace what ``out_dir`` holds (once the new comparison is whole);
            without it, a non-empty ``out_dir`` is refused before anything is written.

    Returns:
        a :class:`ComparisonResult`; failed priors are in ``result.failed`` with their errors.
    """
    start = time.perf_counter()
    if guides is not None and (priors is not None or normal_scales is not None):
        raise ConfigError("compare either priors or guides: the other stays as the base config sets it")
    entries = resolve_guides(guides) if guides is not None else resolve_priors(priors, normal_scales)
    out = Path(out_dir)
    # train's rules: an existing comparison or run is replaced only with overwrite, and only once
    # the new comparison is whole; a comparison cannot be resumed, so no partial one is kept
    rundir = RunDirectory(out, overwrite=overwrite, resumable=False, echo=echo).check()
    out = rundir.out
    splits = load_data(base_config)
    size = base_config.model.latent_size(splits.num_features, table=splits.columns is not None)
    base_config = base_config.replace("model", latent_dim=size)  # every run, and every report, the same
    base_config = base_config.replace("train", batch_size=batch_size_for(base_config.train, splits.train))
    likelihood = _check_shared_settings(base_config, splits, entries[0])
    summary = _summary(base_config, splits, likelihood, entries)
    summary["command"] = command
    t = base_config.train
    echo(f"compare {len(entries)} {entries[0].setting}s on {splits.summary()}")
    echo(
        f"        likelihood {likelihood}; latent {base_config.model.latent_dim}, hidden "
        f"{base_config.model.widths()}; seed {t.seed}; {_budget_text(base_config)}"
    )
    with rundir.lock():
        try:
            result = _compare_in(rundir.prepare(), out, base_config, summary, entries, splits, progress, echo)
        except BaseException:
            rundir.abandon()
            raise
        rundir.commit()
    result.out_dir = out
    result.seconds = time.perf_counter() - start
    summary["total_seconds"] = result.seconds
    echo("")
    echo(_markdown_table(result.rows, summary))
    echo(f"wrote   {out}/: {' '.join(result.files)} runs/ ({result.seconds:.0f} s in all)")
    return result


def _compare_in(
    work: Path,
    out: Path,
    base_config: RunConfig,
    summary: dict[str, Any],
    entries: list[PriorEntry],
    splits: DataSplits,
    progress: bool,
    echo: Callable[..., None],
) -> ComparisonResult:
    """Train every prior and write the tables and figures into ``work`` (the comparison's partial
    directory, moved to ``out`` once whole); the tables record the paths under ``out``."""
    start = time.perf_counter()
    result = ComparisonResult(work, base_config, [], summary)
    views: list[_Views | None] = []
    width = max(len(e.label) for e in entries)
    for i, entry in enumerate(entries, 1):
        cfg = base_config.replace("model", **entry.changes())
        run_dir = work / "runs" / entry.slug
        pr = PriorResult(entry, out / "runs" / entry.slug)
        t0 = time.perf_counter()
        try:
            pr.metrics = train_run(cfg, run_dir, progress=progress, overwrite=True, echo=_silent)
            pr.pointwise = read_pointwise(run_dir)["log_likelihood"]
        except Exception as err:  # one prior's failure must not cost the others
            pr.error = f"{type(err).__name__}: {err}"
        pr.wall_seconds = time.perf_counter() - t0
        result.results.append(pr)
        view = None
        if pr.ok:
            try:
                view = _views(run_dir, splits, cfg.train.seed, pr.metrics.get("kl_per_dim"))
            except Exception as err:  # keep the metrics even if a figure cannot be drawn
                pr.error = f"figures: {type(err).__name__}: {err}"
        views.append(view)
        echo(
            f"[{i}/{len(entries)}] {entry.label:<{width}}  {_progress_text(pr, base_config.model.latent_dim)}"
        )
        _write_tables(result)
    figures = _write_figures(work, result, views, splits)
    result.files = [*TABLES, *figures]
    summary.update(complete=True, total_seconds=time.perf_counter() - start, figures=figures)
    _write_tables(result)
    return result


# --------------------------------------------------------------------------- paired differences


def elpd_data(pointwise_log_px: Any) -> az.ELPDData:
    r"""Held-out pointwise :math:`\log p(x_i)` as ArviZ ``ELPDData`` (``loo`` form, log scale).

    For test points the model never saw, :math:`\log p(x_i)` *is* the expected log
    predictive density of point i: there is nothing to leave out, so ``loo_i`` holds it as
    it is (``p_loo`` 0, no Pareto k: no importance sampling over posterior draws is
    involved) and ``az.compare`` can rank models on it.
    """
    values = np.asarray(pointwise_log_px, dtype=np.float64).reshape(-1)
    n = values.size
    return az.ELPDData(
        data=[
            values.sum(),
            math.sqrt(n * values.var()),
            0.0,
            1,
            n,
            False,
            xr.DataArray(values, dims="obs"),
            "log",
            0.7,
        ],
        index=[
            "elpd_loo",
            "se",
            "p_loo",
            "n_samples",
            "n_data_points",
            "warning",
            "loo_i",
            "scale",
            "good_k",
        ],
    )


def paired_differences(pointwise: dict[str, Any]) -> dict[str, dict[str, Any]]:
    r"""Each model's log p(x) minus the best one's, per point, with the paired standard error.

    ``pointwise`` maps a name to the log p(x) of the *same* held-out points, in the same
    order. Two models scored on the same points share most of their point-to-point
    variation, so the standard error of their difference, :math:`\operatorname{sd}_i(d_i)
    / \sqrt n` with :math:`d_i = \log p_A(x_i) - \log p_B(x_i)`, is much smaller than
    either model's own. Computed by ``az.compare`` on :func:`elpd_data` (its ``elpd_diff``
    and ``dse`` are sums over points; here divided by n, per point, so the standard error
    uses the population sd, ddof 0, as ArviZ does). Returns per name ``diff_to_best`` (0
    for the best, negative otherwise) and ``diff_to_best_se`` (0 for the best).
    """
    elpds = {name: elpd_data(v) for name, v in pointwise.items()}
    sizes = {int(e["n_data_points"]) for e in elpds.values()}
    if len(sizes) > 1:
        raise DataError(f"paired differences need the same points for every model, got sizes {sorted(sizes)}")
    n = sizes.pop()
    with warnings.catch_warnings():  # arviz 0.23 sorts in place, which pandas now deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword")
        table = az.compare(elpds, ic="loo", method="pseudo-BMA", scale="log")
    return {
        name: {
            "diff_to_best": 0.0 - float(table.loc[name, "elpd_diff"]) / n,  # 0.0, not -0.0, for the best
            "diff_to_best_se": float(table.loc[name, "dse"]) / n,
        }
        for name in table.index
    }


# --------------------------------------------------------------------------- text


def _budget_text(cfg: RunConfig) -> str:
    t = cfg.train
    text = f"at most {t.epochs} epoch" + ("s" if t.epochs != 1 else "")
    text += f" (early stopping, patience {t.patience})" if t.patience else ""
    text += f", {t.max_minutes:g} min each" if t.max_minutes is not None else ""
    text += f", batch {t.batch_size}, lr {t.lr:g}, loss {t.loss}"
    text += f" x{t.num_particles}" if t.num_particles != 1 else ""
    text += f", beta {t.beta.end:g}" if t.beta.end != 1 or t.beta.warmup_epochs else ""
    text += f" (warm-up {t.beta.warmup_epochs:g} epochs)" if t.beta.warmup_epochs else ""
    return text + f"; {cfg.eval.split} log p(x) with K={cfg.eval.num_samples}"


def _progress_text(pr: PriorResult, latent_dim: int) -> str:
    if pr.metrics is None:
        return f"failed after {pr.wall_seconds:.1f} s: {pr.error}"
    m, tr = pr.metrics, pr.metrics["training"]
    text = (
        f"log p(x) {m['log_likelihood']:8.2f}  ELBO {m['elbo']:8.2f}  KL {m['kl']:6.2f}  "
        f"active {m['active_units']}/{latent_dim}  {tr['epochs']} epochs, {tr['seconds']:.1f} s"
    )
    return text + (f"  ({pr.error})" if pr.error else "")


def _summary(
    cfg: RunConfig, splits: DataSplits, likelihood: str, entries: list[PriorEntry]
) -> dict[str, Any]:
    from pyro_vae.version import __version__

    t = cfg.train
    return {
        "title": f"{entries[0].setting.capitalize()} comparison on {splits.name}",
        "compared": entries[0].setting,
        "data": splits.summary(),
        "dataset": cfg.data.dataset,
        "data_seed": cfg.data.seed,
        "seed": t.seed,
        "likelihood": likelihood,
        "networks": {
            "latent_dim": cfg.model.latent_dim,
            "network": cfg.model.network,
            "hidden": cfg.model.widths(),
            "activation": cfg.model.activation,
        },
        "budget": {
            "epochs": t.epochs,
            "patience": t.patience,
            "max_minutes": t.max_minutes,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "loss": t.loss,
            "num_particles": t.num_particles,
            "beta": t.beta.end,
            "warmup_epochs": t.beta.warmup_epochs,
            "description": _budget_text(cfg),
        },
        "evaluation": {"split": cfg.eval.split, "num_samples": cfg.eval.num_samples},
        "priors": [e.spec for e in entries],
        "base_config": cfg.to_dict(),
        "pyro_vae_version": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "machine": _machine(),
        "complete": False,
    }


# Markdown columns: (header, row key, format); a format of None means the cell is text.
_MD_COLUMNS = (
    ("prior", "prior", None),
    ("log p(x)", "log_likelihood", "{:.2f}"),
    ("± s.e.", "log_likelihood_se", "{:.2f}"),
    ("− best", "diff_to_best", "{:.2f}"),
    ("± paired s.e.", "diff_to_best_se", "{:.2f}"),
    ("ELBO", "elbo", "{:.2f}"),
    ("KL", "kl", "{:.2f}"),
    ("reconstruction", "reconstruction", "{:.2f}"),
    ("log p(x) − ELBO", "gap", "{:.2f}"),
    ("active units", "active_units", None),
    ("bits/dim", "bits_per_dim", "{:.3f}"),
    ("epochs", "epochs", None),
    ("best epoch", "best_epoch", None),
    ("training s", "train_seconds", "{:.1f}"),
)


def _md_cell(row: dict[str, Any], key: str, fmt: str | None) -> str:
    v = row[key]
    if v is None:
        return "—"
    if key == "active_units":
        return f"{v}/{row['latent_dim']}"
    return fmt.format(v) if fmt else str(v).replace("|", "\\|")


def _markdown_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    columns = [c for c in _MD_COLUMNS if c[1] != "bits_per_dim" or any(r["bits_per_dim"] for r in rows)]
    with_errors = any(r["error"] for r in rows)
    split = summary["evaluation"]["split"]
    headers = [f"{split} {h}" if k == "log_likelihood" else h for h, k, _ in columns]
    headers[0] = summary.get("compared", "prior")  # the prior, or the guide (compare --guides)
    lines = ["| " + " | ".join(headers + ["error"] * with_errors) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(columns) - 1) + ["---"] * with_errors) + "|")
    scored = [r["log_likelihood"] for r in rows if r["log_likelihood"] is not None]
    best = max(scored) if scored else None
    for r in rows:
        cells = [_md_cell(r, k, f) for _, k, f in columns]
        if best is not None and r["log_likelihood"] == best:
            cells[1] = f"**{cells[1]}**"
        if with_errors:
            # the first sentence is enough here; the CSV and JSON keep the whole message
            cells.append((r["error"] or "").split(". ")[0].replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_markdown(rows: list[dict[str, Any]], summary: dict[str, Any], figures: Sequence[str]) -> str:
    """``comparison.md``: the settings, the table (best log p(x) in bold) and the figures."""
    n = summary["evaluation"]["num_samples"]
    nets = summary["networks"]
    text = [
        f"# {summary['title']}",
        "",
        *(
            [f"Produced by `{summary['command']}` ({summary['date']}, {summary['machine']}).", ""]
            if summary.get("command")
            else []
        ),
        f"Data: {summary['data']} (split seed {summary['data_seed']}). Likelihood {summary['likelihood']}; "
        f"latent {nets['latent_dim']}, hidden {nets['hidden']}, {nets['activation']}; seed {summary['seed']}; "
        f"{summary['budget']['description']}.",
        "",
        f"Nats per data point. log p(x) is importance sampled with K = {n} (± its standard error over "
        "data points); '− best' is its difference to the best prior's on the same test points, "
        "± the standard error of that paired difference (sd of the pointwise differences / √n, "
        "by ArviZ's compare): judge two priors by it, not by their separate errors. "
        "ELBO = reconstruction − KL; log p(x) − ELBO estimates the posterior gap "
        "KL(q(z|x) ‖ p(z|x)). Active units: latent dimensions whose posterior mean varies over "
        "the data with variance above 0.01.",
        "",
        _markdown_table(rows, summary),
        "",
    ]
    if not summary.get("complete"):
        text += ["*Incomplete: the comparison is still running or was interrupted.*", ""]
    for name in figures:
        text += [f"![{name[:-4].replace('_', ' ')}]({name})", ""]
    return "\n".join(text)


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return repr(v) if isinstance(v, float) else str(v)


def _write_tables(result: ComparisonResult) -> None:
    rows, out = result.rows, result.out_dir
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_value(r[k]) for k in COLUMNS} for r in rows)
    atomic_write_text(out / "comparison.csv", buffer.getvalue())
    payload = {**result.summary, "rows": rows}
    atomic_write_text(out / "comparison.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    figures = result.summary.get("figures", [])
    atomic_write_text(out / "comparison.md", comparison_markdown(rows, result.summary, figures))


# --------------------------------------------------------------------------- figures


@dataclass
class _Views:
    """What the figures need from one trained model (the model itself is not kept)."""

    samples: np.ndarray
    loc: torch.Tensor
    scale: torch.Tensor
    kl_per_dim: list[float] | None
    density: tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]] | None


def aggregate_posterior_log_prob(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \frac1N \sum_n \mathcal N(z; \mu_n, \operatorname{diag}\sigma_n^2)` for each row of ``z``.

    ``loc`` and ``scale`` are the posteriors of ``N`` data points, ``(N, L)``; ``z`` is ``(G, L)``.
    Chunked over ``z`` so that no intermediate exceeds about ``2**22`` numbers.
    """
    n, latent_dim = loc.shape
    chunk = max(1, 2**22 // (n * latent_dim))
    q = dist.Normal(loc.double(), scale.double())
    out = [torch.logsumexp(q.log_prob(zc.double()[:, None, :]).sum(-1), 1) for zc in z.split(chunk)]
    return (torch.cat(out) - math.log(n)).to(z.dtype)


def _density_grid(vae: VAE, loc: torch.Tensor, scale: torch.Tensor, seed: int):
    """Prior and aggregate-posterior log densities on one grid that covers the bulk of both."""
    g = torch.Generator().manual_seed(seed)
    reps = max(1, 4000 // loc.shape[0])
    posterior_draws = (loc + scale * torch.randn(reps, *loc.shape, generator=g)).reshape(-1, 2)
    prior = vae.prior()
    try:
        torch.manual_seed(seed)
        draws = torch.cat([posterior_draws, prior.sample((4000,)).reshape(-1, 2)])
    except NotImplementedError:  # a prior without a sampler: the grid follows the posterior alone
        draws = posterior_draws
    lo, hi = torch.quantile(draws.double(), torch.tensor([0.005, 0.995], dtype=torch.float64), dim=0)
    pad = 0.1 * (hi - lo) + 1e-3
    lo, hi = (lo - pad).tolist(), (hi + pad).tolist()
    axes = [torch.linspace(lo[d], hi[d], GRID_POINTS) for d in range(2)]
    z1, z2 = torch.meshgrid(axes[0], axes[1], indexing="xy")  # rows follow z2, columns z1
    grid = torch.stack([z1.reshape(-1), z2.reshape(-1)], -1)
    log_prior = prior.log_prob(grid).reshape(GRID_POINTS, GRID_POINTS).numpy()
    log_aggregate = aggregate_posterior_log_prob(loc, scale, grid).reshape(GRID_POINTS, GRID_POINTS).numpy()
    return log_prior, log_aggregate, (lo[0], hi[0], lo[1], hi[1])


@torch.no_grad()
def _views(run_dir: Path, splits: DataSplits, seed: int, kl_per_dim: list[float] | None) -> _Views:
    vae = VAE.load(run_dir)
    vae.eval()
    x, _ = splits.split("test")
    torch.manual_seed(seed)
    samples = splits.preprocessing.inverse(
        vae.sample(64 if splits.image_shape else 2000, mean=True).flatten(1)
    )
    loc, scale = vae.encode(x)
    density = _density_grid(vae, loc, scale, seed) if vae.latent_dim == 2 else None
    return _Views(samples.numpy(), loc, scale, kl_per_dim, density)


def _panels(n: int, width: float, height: float, max_cols: int = 5):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def _failed_panel(ax, label: str) -> None:
    ax.set_title(label, fontsize=9)
    ax.text(0.5, 0.5, "failed\n(the error is in the table)", ha="center", va="center", fontsize=8)
    ax.axis("off")


def plot_sample_panels(
    labels: Sequence[str], samples: Sequence[np.ndarray | None], splits: DataSplits
) -> Figure:
    """Model samples, one panel per prior: image grids, or the first two features against the data."""
    fig, axes = _panels(len(labels), 2.6, 2.8)
    data = splits.preprocessing.inverse(splits.test).numpy()
    for ax, label, s in zip(axes, labels, samples):
        if s is None:
            _failed_panel(ax, label)
            continue
        if splits.image_shape is not None:
            plotting.draw_image_grid(ax, s, splits.image_shape)
        elif s.shape[1] >= 2:
            ax.scatter(data[:, 0], data[:, 1], s=3, color="0.7", label="test data")
            ax.scatter(s[:, 0], s[:, 1], s=3, alpha=0.5, label="model")
            ax.set_xlabel("feature 0")
            ax.set_ylabel("feature 1")
        else:
            ax.hist(data[:, 0], bins=30, density=True, alpha=0.5, label="test data")
            ax.hist(s[:, 0], bins=30, density=True, alpha=0.5, label="model")
        ax.set_title(label, fontsize=9)
    if splits.image_shape is None:
        axes[0].legend(fontsize=7)
    fig.suptitle("samples from each model (decoder mean at z ~ prior)")
    return fig


def plot_latent_panels(
    labels: Sequence[str], means: Sequence[torch.Tensor | None], classes: torch.Tensor | None
) -> Figure:
    """Posterior means of the test set, one panel per prior, coloured by class label."""
    fig, axes = _panels(len(labels), 2.8, 2.6)
    note, artist = "", None
    for ax, label, m in zip(axes, labels, means):
        if m is None:
            _failed_panel(ax, label)
            continue
        points, note = plotting.project_2d(m)
        artist = plotting.draw_latent(ax, points, classes, size=3)
        ax.set_title(label, fontsize=9)
        if note == "first two principal components":
            ax.set_xlabel("PC 1", fontsize=8)
            ax.set_ylabel("PC 2", fontsize=8)
        ax.tick_params(labelsize=7)
    if classes is not None and artist is not None:
        fig.colorbar(artist, ax=list(axes), label="label", shrink=0.8)
    fig.suptitle("posterior means of the test set" + (f" ({note})" if note else ""))
    return fig


def plot_kl_per_dim(labels: Sequence[str], kl: Sequence[Sequence[float] | None]) -> Figure:
    """Mean KL(q(z_j|x) || p(z_j)) per latent dimension: grouped bars, or lines for many dimensions."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    shown = [(label, np.asarray(k, dtype=float)) for label, k in zip(labels, kl) if k is not None]
    latent_dim = len(shown[0][1]) if shown else 0
    colours = [f"C{i}" for i in range(10)] if len(shown) <= 10 else _many_colours(len(shown))
    dims = np.arange(latent_dim)
    if latent_dim <= 10:
        width = 0.8 / max(len(shown), 1)
        for i, (label, k) in enumerate(shown):
            ax.bar(dims + (i - (len(shown) - 1) / 2) * width, k, width, label=label, color=colours[i])
    else:
        for i, (label, k) in enumerate(shown):
            ax.plot(dims, k, marker="o", ms=3, label=label, color=colours[i])
    ax.set_xticks(dims if latent_dim <= 20 else dims[:: math.ceil(latent_dim / 20)])
    ax.set_xlabel("latent dimension j")
    ax.set_ylabel("nats per data point")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(
        "KL(q(z_j|x) ‖ p(z_j)) per dimension, test mean\n(against the prior's marginals: for non-factorised "
        "priors these need not add up to the KL)",
        fontsize=9,
    )
    return fig


def _many_colours(n: int) -> list:
    """``n`` distinct colours for more series than the default cycle has."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def plot_prior_vs_aggregate(labels: Sequence[str], log_densities: Sequence[tuple | None]) -> Figure:
    """Per prior (one row): the prior's log density and the aggregate posterior's on the same grid.

    Log densities on one colour scale per row, :data:`LOG_DENSITY_RANGE` nats deep: on a linear
    scale the aggregate posterior of a few hundred narrow posteriors is a handful of peaks.
    """
    n = len(labels)
    fig = Figure(figsize=(7.8, 3.0 * n), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    for (ax_p, ax_q), label, d in zip(axes, labels, log_densities):
        if d is None:
            _failed_panel(ax_p, label)
            ax_q.axis("off")
            continue
        log_prior, log_aggregate, extent = d
        finite = np.concatenate([v[np.isfinite(v)] for v in (log_prior, log_aggregate)])
        top = float(finite.max()) if finite.size else 0.0
        for ax, values, title in (
            (ax_p, log_prior, f"{label}: prior log p(z)"),
            (ax_q, log_aggregate, "aggregate posterior log (1/N) Σ q(z|x_n)"),
        ):
            im = ax.imshow(
                values,
                origin="lower",
                extent=extent,
                aspect="auto",
                cmap="viridis",
                vmin=top - LOG_DENSITY_RANGE,
                vmax=top,
            )
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("z1", fontsize=8)
            ax.set_ylabel("z2", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=[ax_p, ax_q], shrink=0.9, label="log density").ax.tick_params(labelsize=7)
        if np.isfinite(log_prior).all():
            # The prior's contours (1%, 10% and 50% of its peak) over the aggregate posterior.
            levels = log_prior.max() + np.log([0.01, 0.1, 0.5])
            ax_q.contour(
                log_prior, levels=levels, extent=extent, colors="white", linewidths=0.6, linestyles="solid"
            )
    fig.suptitle("prior beside the aggregate posterior of the test set (white: the prior's contours)")
    return fig


def _write_figures(
    out: Path, result: ComparisonResult, views: list[_Views | None], splits: DataSplits
) -> list[str]:
    labels = [r.entry.label for r in result.results]
    _, classes = splits.split("test")
    figures = {
        "samples.png": plot_sample_panels(labels, [v.samples if v else None for v in views], splits),
        "latent_means.png": plot_latent_panels(labels, [v.loc if v else None for v in views], classes),
        "kl_per_dim.png": plot_kl_per_dim(labels, [v.kl_per_dim if v else None for v in views]),
    }
    if result.config.model.latent_dim == 2:
        figures["prior_vs_aggregate_posterior.png"] = plot_prior_vs_aggregate(
            labels, [v.density if v else None for v in views]
        )
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=100)
    return list(figures)


def _machine() -> str:
    threads = torch.get_num_threads()
    return f"{available_cpus()} CPU cores, torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''}"
