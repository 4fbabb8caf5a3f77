"""Raw tables: pyro_vae's default path against classical density estimators and imputers.

Six or more real tables that ship with installed packages (scikit-learn, statsmodels,
palmerpenguins; nothing is downloaded), split 60/20/20 with several seeds.

Density: test log p(x) per row in the data's own units. pyro_vae runs its default path
(``load_table`` -> ``VAE(likelihood="auto")`` with the CLI's default model -> ``fit`` at
its defaults, early stopping on the objective's validation bound); its discrete columns are scored with
their probability mass functions, its real columns per raw unit (the standardization's
Jacobian added). GaussianMixture (full and diagonal covariances), FactorAnalysis and
KernelDensity, each tuned on the validation split, model the same columns with the
discrete ones (binary, counts, integers, category codes) dequantized, ``x + u`` with
``u ~ U[0, 1)``: a density of ``x + u`` integrates over the unit cell to a probability of
``x``, so its log density is in expectation a lower bound on the estimator's log
probability of the discrete values (Theis et al., 2016), in the same units. They are
fitted on standardized columns and their Jacobian added back. Classical estimators need
complete rows: every method is scored on the complete test rows (pyro_vae trains on all
rows, missing cells included).

Imputation: 30% of the observed cells masked completely at random; every method imputes
the test split's masked cells (pyro_vae: ``vae.impute``, the importance-weighted
conditional mean; baselines: column means, IterativeImputer, KNNImputer fitted on the
masked training split); RMSE on the masked cells of the non-categorical columns, each
column in units of its training standard deviation.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.app.config import ModelConfig  # noqa: E402
from pyro_vae.data import _split_indices  # noqa: E402
from pyro_vae.tables import RawTable, as_raw_table, load_table  # noqa: E402

NAME = "tables"
TABLES = ("iris", "wine", "diabetes", "penguins", "fair", "anes96", "breast_cancer")
QUICK_TABLES = ("iris", "penguins")
DISCRETE = ("binary", "count", "integer", "categorical")


def load_raw(name: str) -> RawTable:
    """A table as it ships, labels kept as columns (iris's species is a categorical column)."""
    import pandas as pd
    from sklearn import datasets

    if name in ("iris", "wine", "breast_cancer", "diabetes"):
        loader = getattr(datasets, f"load_{name}")
        bunch = loader(as_frame=True, **({"scaled": False} if name == "diabetes" else {}))
        frame = bunch.frame.copy()
        if name in ("iris", "wine"):
            frame["target"] = frame["target"].map(dict(enumerate(bunch.target_names))).astype(str)
        if name == "breast_cancer":
            frame = frame.drop(columns=["target"])
        return as_raw_table(frame)
    if name == "penguins":
        from palmerpenguins import load_penguins

        return as_raw_table(load_penguins())
    import statsmodels.api as sm

    frame = getattr(sm.datasets, name).load_pandas().data
    return as_raw_table(pd.DataFrame(frame))


# --------------------------------------------------------------------------- classical estimators


def _tuned(make, grid, train, valid):
    best = max(grid, key=lambda p: np.mean(make(p).fit(train).score_samples(valid)))
    return make(best).fit(train), best


def classical(train, valid, test, quick):
    from sklearn.decomposition import FactorAnalysis
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity

    d = train.shape[1]
    ks = [1, 2] if quick else [1, 2, 3, 5, 8, 12]
    ks = [k for k in ks if k <= max(1, len(train) // (2 * d))] or [1]
    out = {}
    makers = {
        "gmm_full": (
            lambda k: GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=0),
            ks,
        ),
        "gmm_diag": (
            lambda k: GaussianMixture(k, covariance_type="diag", reg_covar=1e-4, random_state=0),
            ks,
        ),
        "factor_analysis": (
            lambda k: FactorAnalysis(k, random_state=0),
            list(range(1, d))[: 3 if quick else None] or [1],
        ),
        "kde": (lambda b: KernelDensity(bandwidth=b), list(np.logspace(-1.3, 0.3, 4 if quick else 12))),
    }
    for name, (make, grid) in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, best = _tuned(make, grid, train, valid)
        out[name] = {"test": model.score_samples(test), "chosen": best}
    return out


def dequantize(values, kinds, rng):
    x = values.copy()
    for j, kind in enumerate(kinds):
        if kind in DISCRETE:
            x[:, j] += rng.uniform(size=len(x))
    return x


# --------------------------------------------------------------------------- one split


def density_split(raw: RawTable, seed: int, args) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_table(raw, valid_fraction=0.2, test_fraction=0.2, seed=seed)
    schema = splits.columns
    idx = _split_indices(len(raw.values), 0.2, 0.2, seed)
    values = schema.coded(raw.values)  # numeric levels as their codes, like text categories
    kinds = [c.kind for c in schema.columns]
    parts = [values[i] for i in idx]
    complete = [~np.isnan(p).any(1) for p in parts]
    rng = np.random.default_rng(seed)
    deq = [dequantize(p[c], kinds, rng) for p, c in zip(parts, complete)]
    mean, sd = deq[0].mean(0), deq[0].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    z = [(p - mean) / sd for p in deq]
    jac = -np.log(sd).sum()
    scores = {k: float(np.mean(v["test"]) + jac) for k, v in (classical(*z, args.quick) or {}).items()}
    t0 = time.perf_counter()
    vae = default_vae(splits)
    history = pyro_vae.fit(vae, splits, progress=False, epochs=args.epochs, seed=seed)
    m = pyro_vae.evaluate(vae, splits, num_samples=args.eval_samples, seed=seed, kl_per_dim=False)
    units = m["pointwise"]["log_likelihood_data_units"].double().numpy()
    scores["pyro_vae"] = float(units[complete[2]].mean())
    return {
        "log_px": scores,
        "pyro_vae_all_test_rows": m["log_likelihood_data_units"],
        "pyro_vae_epochs": len(history),
        "pyro_vae_seconds": time.perf_counter() - t0,
        "likelihood": vae.likelihood.name,
        "complete_test_rows": int(complete[2].sum()),
        "test_rows": len(parts[2]),
    }


def default_vae(splits):
    m = ModelConfig()
    latent = m.latent_size(splits.num_features, table=True)
    return pyro_vae.VAE(splits.num_features, latent, hidden=m.widths(), prior=m.prior, likelihood="auto")


def impute_split(raw: RawTable, seed: int, args) -> dict:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    rng = np.random.default_rng(1000 + seed)
    values = raw.values.copy()
    hide = (rng.uniform(size=values.shape) < 0.3) & ~np.isnan(values)
    masked = np.where(hide, np.nan, values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_table(
            RawTable(masked, raw.names, raw.levels), valid_fraction=0.2, test_fraction=0.2, seed=seed
        )
    schema = splits.columns
    keep = schema.keep
    idx = _split_indices(len(values), 0.2, 0.2, seed)
    train_m, test_m = masked[idx[0]][:, keep], masked[idx[2]][:, keep]
    truth, hidden = values[idx[2]][:, keep], hide[idx[2]][:, keep]
    # every numeric column is scored in its own units (text categories are not)
    scored = np.array([c.kind != "categorical" or c.values is not None for c in schema.columns])
    mean, sd = np.nanmean(train_m, 0), np.nanstd(train_m, 0)
    sd = np.where(sd > 0, sd, 1.0)

    def rmse(filled):
        cells = hidden & scored
        return float(np.sqrt(np.mean(((filled - truth) / sd)[cells] ** 2)))

    out = {}
    for name, imputer in {
        "mean": SimpleImputer(),
        "iterative": IterativeImputer(max_iter=10, random_state=seed),
        "knn": KNNImputer(n_neighbors=5),
    }.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = imputer.fit((train_m - mean) / sd)
            out[name] = rmse(fitted.transform((test_m - mean) / sd) * sd + mean)
    vae = default_vae(splits)
    pyro_vae.fit(vae, splits, progress=False, epochs=args.epochs, seed=seed)
    filled = vae.impute(splits.test, num_samples=args.eval_samples, seed=seed)
    out["pyro_vae"] = rmse(schema.to_raw(filled))
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small tables, one seed, 2 epochs: seconds")
    parser.add_argument(
        "--results-dir", default=None, help="where tables.json goes (default benchmarks/results)"
    )
    parser.add_argument("--tables", default=None, help=f"subset of {','.join(TABLES)}")
    parser.add_argument("--seeds", type=int, default=None, help="splits per table (default 3; quick 1)")
    parser.add_argument("--epochs", type=int, default=None, help="at most (default: fit's default; quick 2)")
    parser.add_argument(
        "--eval-samples", type=int, default=None, help="importance samples (default 1000; quick 20)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    _common.fill_defaults(
        args,
        {
            "tables": (",".join(TABLES), ",".join(QUICK_TABLES)),
            "seeds": (3, 1),
            "epochs": (pyro_vae.TrainConfig().epochs, 2),
            "eval_samples": (1000, 20),
        },
    )
    names = _common.choices_list(args.tables, TABLES, "tables", parser)
    threads = _common.setup_threads()
    result = {
        "benchmark": NAME,
        "command": _common.command_line("tables.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quick": quick,
        "settings": {
            "split": "60/20/20 at random", "seeds": args.seeds, "epochs_max": args.epochs,
            "eval_samples": args.eval_samples, "torch_threads": threads, "mask_fraction": 0.3,
            "protocol": __doc__.split("\n\n", 1)[1],
        },
        "tables": {},
    }  # fmt: skip
    if quick:
        result["note"] = "QUICK smoke run: tiny budgets; numbers meaningless"
    for name in names:
        raw = load_raw(name)
        entry = {
            "rows": len(raw.values),
            "columns": len(raw.names),
            "missing_cells": int(np.isnan(raw.values).sum()),
        }
        entry["density"] = [density_split(raw, s, args) for s in range(args.seeds)]
        entry["imputation_rmse"] = [impute_split(raw, s, args) for s in range(args.seeds)]
        entry["summary"] = summarize(entry)
        result["tables"][name] = entry
        _common.write_results(NAME, quick, result, args.results_dir)
        _common.log(f"[{name}] {entry['summary']}")
    path = _common.write_results(NAME, quick, result, args.results_dir)
    _common.log(f"wrote {path}")
    return result


def summarize(entry: dict) -> dict:
    methods = entry["density"][0]["log_px"].keys()
    density = {k: float(np.mean([d["log_px"][k] for d in entry["density"]])) for k in methods}
    best = max((k for k in density if k != "pyro_vae"), key=density.get)
    imputers = entry["imputation_rmse"][0].keys()
    rmse = {k: float(np.mean([d[k] for d in entry["imputation_rmse"]])) for k in imputers}
    return {
        "log_px": density,
        "best_classical": best,
        "pyro_vae_minus_best_classical": density["pyro_vae"] - density[best],
        "rmse": rmse,
        "pyro_vae_beats_iterative": rmse["pyro_vae"] < rmse["iterative"],
    }


if __name__ == "__main__":
    main()
