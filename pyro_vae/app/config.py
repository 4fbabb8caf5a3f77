"""The run configuration: four sections of typed settings, each setting defined once.

A run directory's ``config.json`` holds the :class:`RunConfig` under ``"run"``, so
``pyro-vae train --config DIR/config.json`` repeats a run exactly. The command-line flags
are generated from the same fields (:mod:`pyro_vae.app.cli`), and the ``train`` section is
the :class:`~pyro_vae.infer.training.TrainConfig` that :func:`pyro_vae.fit` takes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_vae.data import DATASETS
from pyro_vae.data.reading import TEXT_CELLS
from pyro_vae.description import DEFAULT_LATENT, ModelConfig  # noqa: F401  (the model section, defined in the core)
from pyro_vae.distributions import guides, likelihoods, priors
from pyro_vae.errors import ConfigError, ResumeError, SchemaError
from pyro_vae.infer.objectives import make_elbo
from pyro_vae.infer.training import TrainConfig
from pyro_vae.settings import Settings, at_least, seed_range, setting

SPLITS = ("train", "valid", "test")


@dataclass
class DataConfig(Settings):
    SECTION = "data"

    dataset: str = setting("digits", "the data set (digits is bundled)", choices=DATASETS)
    data_dir: str | None = setting(None, "folder with the MNIST .npz files (default $PYRO_VAE_DATA)")
    path: str | None = setting(None, "the file for --dataset csv or npy", flag="--data-path")
    label_column: str | int | None = setting(None, "CSV column holding labels (name or index)")
    dequantize: bool | None = setting(
        None, "uniform dequantization of grey levels (default: for digits and mnist)"
    )
    standardize: bool | None = setting(
        None,
        "standardize features with the training split's mean and sd (default: a CSV table's real-valued "
        "columns, nothing else)",
    )
    column_likelihoods: dict = setting(
        {},
        "a CSV table's likelihood per column, by name or index, with likelihood auto, e.g. "
        '{"smoker": "bernoulli", "visits": "negative_binomial"} (the others are chosen from the data)',
    )
    categorical: list[str] = setting(
        [], "a CSV table's columns to read as categories whatever they hold (comma-separated names)"
    )
    text_cells: str = setting(
        "error",
        "a CSV table's text cells in a numeric column: error (the default, naming them) or missing",
        choices=TEXT_CELLS,
    )
    encoding: str | None = setting(
        None, "a CSV file's text encoding, e.g. latin-1 (default: UTF-8, or UTF-16 with a byte-order mark)"
    )
    seed: int = setting(0, "seed of the train/valid/test split", check=seed_range, flag="--data-seed")


@dataclass
class EvalConfig(Settings):
    SECTION = "eval"

    num_samples: int = setting(
        1000, "importance samples per point for log p(x)", check=at_least(1), flag="--eval-samples"
    )
    split: str = setting("test", "the split to evaluate", choices=SPLITS, flag="--eval-split")
    chunk_size: int | None = setting(
        None,
        "(sample, point) pairs per chunk (default: sized from the model)",
        check=at_least(1),
        flag="--eval-chunk-size",
    )


SECTIONS: dict[str, type[Settings]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


@dataclass
class RunConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RunConfig:
        """The checks that involve several settings: options against their plug-in, data paths, objective."""
        m, d, t = self.model, self.data, self.train
        if m.likelihood == "auto" and m.likelihood_options:
            raise ConfigError(
                "model.likelihood_options (--likelihood-options) need a likelihood name (--likelihood NAME); "
                "'auto' takes none"
            )
        _plugin(
            "model.likelihood",
            lambda: m.likelihood == "auto" or likelihoods.create(m.likelihood, **m.likelihood_options),
        )
        _plugin("model.prior", lambda: priors.create({"name": m.prior, "options": m.prior_options}))
        _plugin("model.guide", lambda: guides.create({"name": m.guide, "options": m.guide_options}))
        _plugin("train", lambda: make_elbo(t.loss, t.num_particles))
        if d.column_likelihoods and (m.likelihood != "auto" or d.dataset != "csv"):
            raise ConfigError(
                "data.column_likelihoods (--column-likelihoods) need a CSV table (--dataset csv) and "
                f"model.likelihood 'auto', got {d.dataset!r} and {m.likelihood!r}"
            )
        csv_only = {"categorical": [], "text_cells": "error", "encoding": None}
        changed = [k for k, default in csv_only.items() if getattr(d, k) != default]
        if changed and d.dataset != "csv":
            flags = ", ".join(f"data.{k} (--{k.replace('_', '-')})" for k in changed)
            raise ConfigError(f"{flags} read a CSV table (--dataset csv), not {d.dataset!r}")
        if d.dataset in ("csv", "npy") and not d.path:
            raise ConfigError(f"data.dataset {d.dataset!r} needs data.path (command line: --data-path FILE)")
        # a setting the data set does not read would be ignored without a word
        if d.path and d.dataset not in ("csv", "npy"):
            raise ConfigError(
                f"data.path (--data-path) is read by the datasets csv and npy, not {d.dataset!r}: "
                "add --dataset csv or --dataset npy, or leave the path out"
            )
        if d.label_column is not None and d.dataset != "csv":
            raise ConfigError(
                f"data.label_column (--label-column) names a column of a CSV table, and the dataset is "
                f"{d.dataset!r}: add --dataset csv, or leave the label column out"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    def replace(self, section: str, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied to one section, every value checked."""
        sections = {name: getattr(self, name) for name in SECTIONS}
        sections[section] = sections[section].replace(**changes)
        return RunConfig(**sections)

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"unknown section(s) {unknown} in the run config; allowed: {', '.join(SECTIONS)}"
            )
        return cls(**{name: c.from_dict(d.get(name, {}), name) for name, c in SECTIONS.items()})

    @classmethod
    def from_json(cls, path: str | Path) -> RunConfig:
        """Read a run config, or the ``"run"`` section of a run directory's ``config.json``."""
        from pyro_vae.io import read_json

        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        d = read_json(path, what="run config")
        if "run" not in d and "format_version" in d:  # a model's config.json, as VAE.save writes it
            raise ConfigError(
                f"{path} holds a saved model but no run settings (no 'run' section): it was written by "
                "VAE.save, not pyro-vae train; pass a run directory's config.json, or a file of run "
                f"settings with the sections {', '.join(SECTIONS)}"
            )
        try:
            return cls.from_dict(d.get("run", d))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _plugin(where: str, build) -> None:
    try:
        build()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


# ------------------------------------------------------------------ resuming a run

#: Settings a resumed run may change: where it runs and how its final evaluation is done. The
#: model, the data and the training are those the run started with.
RESUME_MAY_CHANGE = frozenset(
    {
        "data.data_dir",  # where the same data set's files are, on this machine
        "train.device",
        "train.num_threads",
        "train.ddp_timeout_s",
        "eval.num_samples",
        "eval.split",
        "eval.chunk_size",
    }
)
#: Budgets a resumed run may change (to finish a long run early, or to train it longer): the run
#: trains to the new budget, as a run given it from the start would (a resume is exact), and
#: ``config.json`` records it; ``epochs`` no fewer than the run has trained (:func:`check_trained`).
RESUME_BUDGETS = frozenset({"train.epochs", "train.max_minutes"})


@dataclass(frozen=True)
class SettingChange:
    """One setting whose value differs between a saved run and the settings given to resume it."""

    key: str
    saved: Any
    given: Any

    @property
    def allowed(self) -> bool:
        """Whether a resumed run may make this change (:data:`RESUME_MAY_CHANGE`, :data:`RESUME_BUDGETS`)."""
        return self.key in RESUME_MAY_CHANGE or self.key in RESUME_BUDGETS

    def describe(self) -> str:
        """``key (--flag): saved X, given Y``."""
        return f"{self.key} ({flag_of(self.key)}): saved {_shown(self.saved)}, given {_shown(self.given)}"

    def to_dict(self) -> dict[str, Any]:
        return {"saved": self.saved, "given": self.given}


def flag_of(key: str) -> str:
    """The command-line flag of setting ``key`` (``"model.hidden"`` -> ``"--hidden"``).

    Args:
        key: ``section.field`` of a :class:`RunConfig` setting.

    Returns:
        The flag that :mod:`pyro_vae.app.cli` generates for it.
    """
    section, name = key.split(".", 1)
    field = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)
    return field.metadata.get("flag") or "--" + name.replace("_", "-")


def setting_changes(saved: RunConfig, given: RunConfig) -> list[SettingChange]:
    """Every setting whose value differs between two run configs, in section and field order.

    Args:
        saved: the settings a run was trained with.
        given: the settings it is now given.

    Returns:
        One :class:`SettingChange` per differing setting (a beta schedule counts as one).
    """
    old, new = saved.to_dict(), given.to_dict()
    return [
        SettingChange(f"{section}.{name}", old[section][name], new[section][name])
        for section in SECTIONS
        for name in old[section]
        if old[section][name] != new[section][name]
    ]


def check_resume(saved: RunConfig, given: RunConfig, where: str | Path) -> list[SettingChange]:
    """The changes a resumed run makes, once every one of them is allowed.

    Args:
        saved: the settings in the run's ``config.json``.
        given: the settings it is resumed with.
        where: the saved ``config.json``, named in the message.

    Returns:
        The allowed changes (budgets extended, where it runs, how it is evaluated), to record.

    Raises:
        ResumeError: listing every refused change (``setting (--flag): saved X, given Y``).
    """
    changes = setting_changes(saved, given)
    refused = [c for c in changes if not c.allowed]
    if refused:
        raise ResumeError(
            f"--resume continues the run as {where} describes it, and {len(refused)} setting(s) differ: "
            + "; ".join(c.describe() for c in refused)
            + ". Leave them out to continue the run (--epochs and --max-minutes may change its budget), "
            "or train a new run with another --out"
        )
    return changes


def check_trained(given: RunConfig, trained: int, where: str | Path) -> None:
    """Refuse an epoch budget below the epochs a resumed run has trained: its record would be untrue.

    Args:
        given: the settings the run is resumed with.
        trained: the epochs in the checkpoint it continues from.
        where: the run, named in the message.

    Raises:
        ResumeError: naming both numbers.
    """
    if given.train.epochs < trained:
        raise ResumeError(
            f"train.epochs (--epochs) {given.train.epochs} is fewer than the {trained} epochs the run in {where} "
            f"has trained: give --epochs {trained} or more to continue it, or train a new run with another --out"
        )


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# ------------------------------------------------------------------ a run's table schema

SHOWN_MOVES = 5  # reordered columns named in a message, at most


def check_columns(saved: dict[str, Any] | None, given: dict[str, Any] | None, where: str) -> None:
    """Refuse data whose table differs from the one a run was trained on.

    Both schemas are :meth:`~pyro_vae.data.tables.TableSchema.to_dict` dicts (a run's
    ``config.json`` holds the saved one under ``"columns"``): the raw table's column names and
    their order, and each kept column's kind and levels must be the same.

    Args:
        saved: the run's schema, or None for a run that saved none (nothing to check).
        given: the schema of the data given now, or None when they are not a table.
        where: the data's file or name, for the message.

    Raises:
        SchemaError: naming every column that differs, and the run's columns in order.
    """
    if saved is None:
        return
    run_names = list(saved["source_names"])
    if given is None:
        raise SchemaError(f"{where} is not a table, and the run was trained on one with columns {run_names}")
    problems = _name_problems(run_names, list(given["source_names"])) or _column_problems(saved, given)
    if problems:
        raise SchemaError(
            f"the table in {where} does not match the one the run was trained on: "
            + "; ".join(problems)
            + f". Give the run's columns, in its order: {', '.join(run_names)}"
        )


def _name_problems(run: list[str], here: list[str]) -> list[str]:
    problems = [f"column {n!r} is missing" for n in run if n not in here]
    problems += [f"column {n!r} is not in the run's table" for n in here if n not in run]
    if problems:
        return problems
    moved = [
        f"column {n!r} is column {here.index(n) + 1} here, {i + 1} in the run's table"
        for i, n in enumerate(run)
        if here[i] != n
    ]
    return moved[:SHOWN_MOVES] + (
        [f"{len(moved) - SHOWN_MOVES} more moved"] if len(moved) > SHOWN_MOVES else []
    )


def _column_problems(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    run = {c["name"]: c for c in saved["columns"]}
    here = {c["name"]: c for c in given["columns"]}
    dropped = {d["name"]: d.get("reason", "") for d in given.get("dropped", [])}
    problems = []
    for name, c in run.items():
        if name not in here:
            problems.append(
                f"column {name!r} is dropped here ({dropped.get(name, 'not kept')}); the run models it"
            )
            continue
        h = here[name]
        if h["kind"] != c["kind"]:
            problems.append(f"column {name!r} is {h['kind']} here, {c['kind']} in the run's table")
        for part in ("levels", "values"):
            if h.get(part) != c.get(part):
                problems.append(
                    f"column {name!r} has {part} {h.get(part)} here, {c.get(part)} in the run's table"
                )
    problems += [f"column {n!r} is modelled here but was dropped by the run" for n in here if n not in run]
    return problems
