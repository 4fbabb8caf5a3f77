"""The main job: train, evaluate and report a VAE from a :class:`~pyro_vae.app.config.RunConfig`.

A run directory holds ``config.json`` (model and run settings, preprocessing),
``model.pt`` (weights), ``training_state.pt`` (optimizer state), ``history.csv``,
``metrics.json``, ``pointwise.npz`` (each test point's log p(x) and ELBO, for paired
comparisons) and the figures.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae import data as data_module
from pyro_vae import description, memory
from pyro_vae.app import plotting
from pyro_vae.app.config import SPLITS, RunConfig, SettingChange, check_columns, check_resume, check_trained
from pyro_vae.app.rundir import CONFIG_FILE, RunDirectory
from pyro_vae.errors import CheckpointError, ConfigError, DataError
from pyro_vae.infer import distributed as dist_utils
from pyro_vae.infer.evaluation import default_chunk_size, evaluate
from pyro_vae.infer.training import (
    CHECKPOINT_FORMAT,
    HISTORY_FILE,
    TRAINING_STATE_FILE,
    History,
    batch_size_for,
    fit,
)
from pyro_vae.io import (
    atomic_write,
    atomic_write_json,
    check_training_state,
    load_tensors,
    read_json,
    save_figure,
)
from pyro_vae.model import VAE
from pyro_vae.utils import available_cpus, resolve_device

POINTWISE_FILE = "pointwise.npz"
FIGURES = ("training_curves.png", "reconstructions.png", "samples.png", "latent_means.png")
# What training_state.pt must hold to be resumed (as pyro_vae.infer.training writes it).
TRAINING_STATE_KEYS = ("format", "epoch", "model", "optimizer", "history", "early_stopping", "rng")


def load_data(cfg: RunConfig) -> data_module.DataSplits:
    """The data of a run: the data section's settings are ``load_dataset``'s arguments."""
    settings = cfg.data.to_dict()
    return data_module.load_dataset(settings.pop("dataset"), **settings)


def input_shape(cfg: RunConfig, splits: data_module.DataSplits) -> int | tuple[int, ...]:
    """What the VAE of a run sees (:func:`pyro_vae.description.input_shape`)."""
    return description.input_shape(cfg.model, splits)


def build_vae(cfg: RunConfig, splits: data_module.DataSplits, echo=None) -> VAE:
    """The run's VAE, its description completed from the training split
    (:func:`pyro_vae.description.resolve`) and every module built once; ``echo`` prints what
    the data decided."""
    resolved = description.resolve(cfg.model, splits)
    for reason in resolved.reasons if echo is not None else ():
        echo(f"model   {reason}")
    return description.build(resolved)


def _public_metrics(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "pointwise"}


def evaluate_split(
    vae: VAE, splits: data_module.DataSplits, cfg: RunConfig, progress: bool, **options: Any
) -> dict[str, Any]:
    """The metrics of ``cfg.eval.split``, with the per-point values under ``"pointwise"``
    (numpy, float64); ``options`` go to :func:`~pyro_vae.evaluate` (``method="ais"``, ...)."""
    x, _ = splits.split(cfg.eval.split)
    result = evaluate(
        vae,
        x,
        cfg.eval.num_samples,
        chunk_size=cfg.eval.chunk_size,
        seed=cfg.train.seed,
        log_abs_det_jacobian=splits.preprocessing.log_abs_det_jacobian_per_feature(splits.num_features),
        progress=progress,
        **options,
    )
    pointwise = {k: v.double().numpy() for k, v in result["pointwise"].items()}
    return {"split": cfg.eval.split, **_public_metrics(result), "pointwise": pointwise}


def write_pointwise(path: Path, pointwise: dict[str, np.ndarray], split: str) -> None:
    """``pointwise.npz``: one float64 array per per-point metric, and the split's name."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, split=np.array(split), **pointwise)

    atomic_write(path, write)


def read_pointwise(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a run's ``pointwise.npz`` (``log_likelihood``, ``elbo``, ``split``)."""
    path = Path(run_dir) / POINTWISE_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: the run predates per-point results; re-run it to compare pairs")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def write_figures(
    out: Path, vae: VAE, splits: data_module.DataSplits, history: History | None, seed: int
) -> None:
    x, labels = splits.split("test")
    torch.manual_seed(seed)
    vae.eval()
    with torch.no_grad():
        figures = {
            "reconstructions.png": plotting.plot_reconstructions(
                splits.preprocessing.inverse(x[:16]),
                splits.preprocessing.inverse(vae.reconstruct(x[:16]).flatten(1)),
                splits.image_shape,
                names=splits.feature_names,
            ),
            "samples.png": plotting.plot_samples(
                splits.preprocessing.inverse(
                    vae.sample(64 if splits.image_shape else 2000, mean=True).flatten(1)
                ),
                splits.image_shape,
                data=splits.preprocessing.inverse(x),
                names=splits.feature_names,
            ),
            "latent_means.png": plotting.plot_latent(vae.encode(x)[0], labels),
        }
    if history is not None:
        figures["training_curves.png"] = plotting.plot_history(history)
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=110)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def train_run(
    cfg: RunConfig,
    out: str | Path,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    echo=print,
) -> dict[str, Any]:
    """Train, evaluate and write a run directory; returns the metrics.

    Everything (settings, data and their support, the output location) is checked before
    the first byte is written; the run trains in ``.NAME.partial`` beside ``out`` and
    moves into place when it has succeeded (:mod:`pyro_vae.app.rundir`). ``resume=True``
    continues the run in ``out`` (or its interrupted partial directory) from its last epoch;
    ``overwrite=True`` replaces an existing run once the new one has succeeded. Under
    ``torchrun`` every process trains its share with DDP and process 0 alone prints and writes.
    """
    cfg.validate()
    rundir = RunDirectory(out, resume=resume, overwrite=overwrite, echo=echo).check()
    distributed = launched_by_torchrun()
    ctx = dist_utils.setup(cfg.train.device, cfg.train.ddp_timeout_s) if distributed else dist_utils.SINGLE
    if not ctx.is_main:
        echo = _silent
    saved = _saved_settings(cfg, rundir) if rundir.resume else None  # before the data are read
    splits = load_data(cfg)
    # the default batch size depends on the data: fixed here, so config.json and the report say it
    cfg = cfg.replace("train", batch_size=batch_size_for(cfg.train, splits.train, ctx.world_size))
    echo(f"data    {splits.summary()}")
    if splits.columns is not None:
        for line in splits.columns.summary_lines():
            echo(line)
    changes = _check_resumed(saved, cfg, splits, rundir, echo) if saved is not None else []
    vae = _prepared_vae(cfg, splits, rundir, echo)
    record = _resume_record(cfg, rundir, changes) if rundir.resume else {}
    with rundir.lock() if ctx.is_main else contextlib.nullcontext():
        try:
            history, metrics = _train_and_write(
                cfg, vae, splits, rundir, ctx, distributed, progress, echo, record=record
            )
        except BaseException:
            if ctx.is_main:
                rundir.abandon()
            raise
    if not ctx.is_main:
        return metrics
    echo(
        f"train   {len(history)} epochs in {history.seconds:.1f} s"
        + (f", best validation bound at epoch {history.best_epoch}" if history.best_epoch else "")
        + (" (early stop)" if history.stopped_early else "")
        + (f"; {history.threads}" if history.threads else "")
    )
    echo(summary_line(metrics, vae))
    echo(
        f"wrote   {rundir.out}/: config.json model.pt metrics.json {POINTWISE_FILE} history.csv "
        + " ".join(FIGURES)
    )
    return metrics


def _train_and_write(
    cfg, vae, splits, rundir, ctx, distributed, progress, echo, *, record: dict[str, Any]
) -> tuple[History, dict]:
    """Train in the partial directory, evaluate, write everything there and move it into place.

    ``record`` adds to ``config.json`` (a resumed run's ``"resumes"``, from :func:`_resume_record`).
    """
    resume = rundir.resume
    extra = {"run": cfg.to_dict(), "preprocessing": splits.preprocessing.to_dict(), **record}
    if splits.columns is not None:
        extra["columns"] = splits.columns.to_dict()
    work = rundir.prepare() if ctx.is_main else (rundir.source if resume else rundir.partial)
    if ctx.is_main:
        # the run's settings are on disk before training starts; a resumed run's extended budget
        # too, so that an interruption leaves a partial run that says what it was training for
        vae.save(work, extra=extra)
    _describe(cfg, vae, ctx, distributed, echo)
    history = fit(
        vae,
        splits.train_dataset(seed=cfg.train.seed),
        splits.valid,
        cfg.train,
        progress=progress,
        checkpoint_dir=work,
        distributed=distributed,
        resume=resume,
    )
    metrics = evaluate_split(vae, splits, cfg, progress and ctx.is_main)  # sharded under DDP
    pointwise = metrics.pop("pointwise")
    if ctx.is_main:
        write_pointwise(work / POINTWISE_FILE, pointwise, cfg.eval.split)
        metrics["training"] = _training_summary(history, vae)
        vae.save(work, extra=extra)
        history.to_csv(work / HISTORY_FILE)
        atomic_write_json(work / "metrics.json", metrics)
        write_figures(work, vae, splits, history, cfg.train.seed)
        rundir.commit()
    return history, metrics


def _prepared_vae(cfg: RunConfig, splits: data_module.DataSplits, rundir: RunDirectory, echo) -> VAE:
    """The VAE to train, its likelihood chosen and every split checked against it (no writes)."""
    if rundir.resume:
        vae = VAE.load(rundir.source)
        # whole, readable and this run's own before the run is copied to continue it (no writes
        # on a damaged or foreign one, and no partial copy left to block the next run)
        path = rundir.source / TRAINING_STATE_FILE
        state = load_tensors(path, what="training state", finite=True)
        check_training_state(vae, state, path, TRAINING_STATE_KEYS)
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"training state {path} was written by another pyro_vae version (format {state['format']!r}, "
                f"this one writes {CHECKPOINT_FORMAT}) and cannot be resumed exactly; start afresh with --overwrite"
            )
        echo(f"resume  from {path}")
    else:
        vae = build_vae(cfg, splits, echo)
    for split in SPLITS:
        x, _ = splits.split(split)
        if len(x):
            vae.check_data(x)
    if len(splits.split(cfg.eval.split)[0]) == 0:
        raise DataError(f"the {cfg.eval.split} split is empty: choose another eval.split (--eval-split)")
    check_resources(cfg, vae)
    return vae


def check_resources(cfg: RunConfig, vae: VAE) -> None:
    """A training step, an evaluation chunk and the thread count against this machine (no writes).

    Raises:
        ConfigError: naming the setting to lower.
    """
    t = cfg.train
    device = resolve_device(t.device)
    memory.check_step(vae, t.batch_size, t.num_particles, device=device)
    memory.check_chunk(vae, cfg.eval.chunk_size or default_chunk_size(vae), device=device)
    cores = available_cpus()
    if t.num_threads is not None and t.num_threads > cores:
        raise ConfigError(
            f"train.num_threads {t.num_threads} is more than the {cores} CPU cores this process may use; "
            f"give at most {cores} (--num-threads), or leave it unset to follow the machine's load"
        )


def _saved_settings(cfg: RunConfig, rundir: RunDirectory) -> RunConfig:
    """The settings a resumed run was trained with, once ``cfg`` changes none it may not.

    Checked before the data are read, so that a changed data path is named rather than read;
    a null batch size (the data's default) is compared once the data are in
    (:func:`_check_resumed`).

    Raises:
        ResumeError: listing every model, data or training setting that differs.
    """
    saved = RunConfig.from_json(rundir.source)
    if cfg.train.batch_size is None:
        cfg = cfg.replace("train", batch_size=saved.train.batch_size)
    check_resume(saved, cfg, rundir.source / CONFIG_FILE)
    return saved


def _check_resumed(
    saved: RunConfig, cfg: RunConfig, splits: data_module.DataSplits, rundir: RunDirectory, echo
) -> list[SettingChange]:
    """The changes a resumed run makes (printed), its batch size and table checked against the saved.

    Raises:
        ResumeError: the batch size differs.
        SchemaError: the table differs from the one the run was trained on (names, order, kinds, levels).
    """
    path = rundir.source / CONFIG_FILE
    changes = check_resume(saved, cfg, path)
    check_columns(saved_record(rundir.source)["columns"], _schema(splits), _data_name(cfg))
    for change in changes:
        echo(f"resume  {change.describe()}")
    return changes


def _resume_record(cfg: RunConfig, rundir: RunDirectory, changes: list[SettingChange]) -> dict[str, Any]:
    """What ``config.json`` records of the run's resumes: the earlier ones and this one.

    Args:
        cfg: the settings the run is resumed with.
        rundir: the run, with the ``config.json`` and (checked) training state it continues from.
        changes: the settings this resume changed.

    Returns:
        ``{"resumes": [...]}``, each entry the epoch it continued after and the settings it
        changed (``{"saved": X, "given": Y}``).

    Raises:
        ResumeError: ``cfg``'s epoch budget is below the epochs the run has trained.
    """
    earlier = saved_record(rundir.source)["resumes"]
    trained = int(load_tensors(rundir.source / TRAINING_STATE_FILE, what="training state")["epoch"])
    check_trained(cfg, trained, rundir.source)
    entry = {"after_epoch": trained, "changes": {c.key: c.to_dict() for c in changes}}
    return {"resumes": [*earlier, entry]}


def saved_record(run_dir: str | Path) -> dict[str, Any]:
    """What a run's ``config.json`` records beside its settings, each section checked.

    Args:
        run_dir: the run directory (or its partial directory).

    Returns:
        ``{"columns": the table schema as a dict, or None; "resumes": the list of resumes}``.

    Raises:
        ConfigError: ``config.json`` is unreadable, or a section is not what ``train`` writes.
    """
    path = Path(run_dir) / CONFIG_FILE
    payload = read_json(path, what="run config")
    columns, resumes = payload.get("columns"), payload.get("resumes", [])
    if columns is not None and not _is_schema(columns):  # a hand-edited or foreign file
        raise ConfigError(
            f"{path}: its 'columns' section does not describe a table (source_names, and columns each "
            "with a name and kind); restore the run's config.json"
        )
    if not isinstance(resumes, list):
        raise ConfigError(f"{path}: 'resumes' must be a list of the run's resumes, got {resumes!r}")
    return {"columns": columns, "resumes": resumes}


def _is_schema(d: Any) -> bool:
    """Whether ``d`` has what :func:`~pyro_vae.app.config.check_columns` reads of a saved schema
    (only that: a schema saved by another version, with other column fields, still counts)."""
    if not isinstance(d, dict) or not isinstance(d.get("source_names"), list):
        return False
    columns, dropped = d.get("columns"), d.get("dropped", [])
    return (
        isinstance(columns, list)
        and all(isinstance(c, dict) and {"name", "kind"} <= set(c) for c in columns)
        and isinstance(dropped, list)
        and all(isinstance(x, dict) and "name" in x for x in dropped)
    )


def _schema(splits: data_module.DataSplits) -> dict[str, Any] | None:
    return None if splits.columns is None else splits.columns.to_dict()


def _data_name(cfg: RunConfig) -> str:
    return cfg.data.path or cfg.data.dataset


def _describe(cfg: RunConfig, vae: VAE, ctx, distributed: bool, echo) -> None:
    t = cfg.train
    if distributed:
        backend = "nccl" if ctx.device.type == "cuda" else "gloo"
        echo(f"ddp     {ctx.world_size} processes, {backend}, batch {t.batch_size} each")
    echo(
        f"model   likelihood {vae.likelihood.name}, prior {vae.prior.name}, latent {vae.latent_dim}, "
        f"network {vae.network}, hidden {list(vae.hidden)}; loss {t.loss} x{t.num_particles}, beta {t.beta.end}"
        + (f" (warm-up {t.beta.warmup_epochs} epochs)" if t.beta.warmup_epochs else "")
    )


def _training_summary(history: History, vae: VAE) -> dict[str, Any]:
    return {
        "epochs": len(history),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "seconds": history.seconds,
        "threads": history.threads,
        "likelihood": vae.likelihood.name,
        "likelihood_choice": history.notes,
        "prior": vae.prior.name,
    }


def _silent(*args, **kwargs) -> None:
    pass


def summary_line(m: dict[str, Any], vae: VAE) -> str:
    line = (
        f"{m['split']:7} {m['num_points']} points, K={m['num_samples']}: log p(x) {m['log_likelihood']:.2f} "
        f"± {m['log_likelihood_se']:.2f} nats, ELBO {m['elbo']:.2f}, KL {m['kl']:.2f}, "
        f"reconstruction {m['reconstruction']:.2f}, active units {m['active_units']}/{vae.latent_dim}"
    )
    if "bits_per_dim" in m and math.isfinite(m["bits_per_dim"]):
        line += f", {m['bits_per_dim']:.3f} bits/dim"
    if m.get("log_abs_det_jacobian"):
        line += f"; log p(x) in the data's own units {m['log_likelihood_data_units']:.2f} nats"
    if m.get("missing_cells"):
        line += (
            f"; {m['missing_cells']} missing cells in {m['missing_rows']} rows, scored on the observed cells"
        )
    if m.get("method") == "ais":
        line += (
            f"; log p(x) by AIS (T={m['ais_steps']}, {m['ais_chains']} chains: ESS {m['ais_ess']:.1f}, "
            f"acceptance {m['ais_acceptance']:.2f}; importance sampling {m['log_likelihood_importance']:.2f})"
        )
    return line


def load_run(
    run_dir: str | Path, *, split: str | None = None, data_dir: str | None = None
) -> tuple[RunConfig, VAE, data_module.DataSplits]:
    """A saved run's config, model and data, the data read again from their file.

    Args:
        run_dir: the run directory.
        split: evaluate this split instead of the run's ``eval.split``.
        data_dir: read the data set's files from here instead of the run's ``data.data_dir``.

    Returns:
        The run config, the VAE and the data splits.

    Raises:
        SchemaError: the run's CSV no longer has the table the run was trained on (column names,
            order, kinds or levels), naming the columns.
    """
    run_dir = Path(run_dir)
    cfg = RunConfig.from_json(run_dir)
    if split is not None:
        cfg = cfg.replace("eval", split=split)
    if data_dir is not None:
        cfg = cfg.replace("data", data_dir=data_dir)
    vae = VAE.load(run_dir)
    splits = load_data(cfg)
    # the data are read again from their file: refuse a table unlike the one the model was trained on
    check_columns(saved_record(run_dir)["columns"], _schema(splits), _data_name(cfg))
    return cfg, vae, splits


def evaluate_run(
    run_dir: str | Path,
    *,
    num_samples: int | None = None,
    split: str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    echo=print,
    **options: Any,
) -> dict[str, Any]:
    """Re-evaluate a saved run on its data (optionally another split or K; ``options`` go to
    :func:`~pyro_vae.evaluate`, e.g. ``method="ais", ais_steps=..., ais_chains=...``).

    The data are read as :func:`load_run` reads them: a table unlike the run's is a
    :class:`~pyro_vae.errors.SchemaError`.
    """
    cfg, vae, splits = load_run(run_dir, split=split, data_dir=data_dir)
    if num_samples is not None:
        cfg = cfg.replace("eval", num_samples=num_samples)
    if options.get("method") == "ais" and options.get("ais_chains"):
        memory.check_ais(vae, options["ais_chains"], device=resolve_device(cfg.train.device))
    metrics = evaluate_split(vae, splits, cfg, progress, **options)
    metrics.pop("pointwise")
    echo(summary_line(metrics, vae))
    return metrics
