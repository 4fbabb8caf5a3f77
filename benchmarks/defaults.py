"""Default recipes for small tables, measured against each other: how fit's defaults were chosen.

Each recipe is a model (hidden widths, latent size, prior) and training settings; each runs
``fit`` on the small real tables of ``benchmarks/tables.py`` (same loading, 60/20/20 splits)
from ``VAE(likelihood="auto")``, early stopping on the objective's validation bound. Reported
per table and split: the best validation bound, the validation and test log p(x) per row
(importance sampling, ``--eval-samples`` draws, in the standardized units pyro_vae
trains in: the same for every recipe), the epochs run and the seconds. Recipes are compared
by validation log p(x) (what a user can see) and test log p(x) (what they would get).

Runs accumulate in one JSON (``defaults.json``): a later run with other ``--tables`` or
``--recipes`` adds its entries, each with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from tables import TABLES as TABLE_NAMES  # noqa: E402
from tables import load_raw  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.app.config import ModelConfig  # noqa: E402
from pyro_vae.data.tables import load_table  # noqa: E402

NAME = "defaults"
TABLES = TABLE_NAMES
# name: (model options, fit settings) that differ from the default path: latent 8 (half the
# columns of a table wider than 16), hidden 256,256, N(0, I); batch 128 or a tenth of the
# training rows (at least 16), the objective's validation bound, learning-rate reduction
# after 40 epochs without progress, no weight decay.
RECIPES = {
    "default": ({}, {}),
    "batch128": ({}, {"batch_size": 128}),
    "latent8": ({"latent_dim": 8}, {}),
    "h64": ({"hidden": [64, 64]}, {}),
    "mixture": ({"prior": "mixture"}, {}),
    "weight_decay": ({}, {"weight_decay": 0.1}),
    "no_lr_reduction": ({}, {"lr_patience": None}),
}


def run_one(raw, seed: int, recipe: str, args) -> dict:
    model, train = RECIPES[recipe]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_table(raw, valid_fraction=0.2, test_fraction=0.2, seed=seed)
    defaults = ModelConfig()
    options = {
        "latent_dim": defaults.latent_size(splits.num_features, table=True),
        "hidden": defaults.widths(),
        "prior": defaults.prior,
        **model,
    }
    vae = pyro_vae.VAE(
        splits.num_features,
        options["latent_dim"],
        hidden=options["hidden"],
        prior=options["prior"],
        likelihood="auto",
    )
    t0 = time.perf_counter()
    history = pyro_vae.fit(vae, splits, progress=False, seed=seed, epochs=args.epochs, **train)
    seconds = time.perf_counter() - t0
    scores = {}
    for split in ("valid", "test"):
        data = getattr(splits, split)
        m = pyro_vae.evaluate(vae, data, num_samples=args.eval_samples, seed=seed, kl_per_dim=False)
        scores[split] = m["log_likelihood"]
    return {
        "valid_log_px": scores["valid"],
        "test_log_px": scores["test"],
        "best_valid_bound": max(history["valid_bound"]),
        "epochs": len(history),
        "best_epoch": history.best_epoch,
        "final_lr": history["lr"][-1],
        "seconds": seconds,
    }


def summarize(entries: dict) -> dict:
    """Per recipe: mean test and validation log p(x) over every table and split it ran on,
    and its mean rank by test log p(x) among the recipes run on the same table and split."""
    by_case: dict[str, dict[str, dict]] = {}
    for key, e in entries.items():
        table, seed, recipe = key.split("/")
        by_case.setdefault(f"{table}/{seed}", {})[recipe] = e
    out: dict[str, dict[str, list]] = {}
    for case in by_case.values():
        ranked = sorted(case, key=lambda r: -case[r]["test_log_px"])
        for recipe, e in case.items():
            o = out.setdefault(recipe, {"test": [], "valid": [], "rank": [], "epochs": []})
            o["test"].append(e["test_log_px"])
            o["valid"].append(e["valid_log_px"])
            o["rank"].append(ranked.index(recipe) + 1)
            o["epochs"].append(e["epochs"])
    return {
        r: {
            "cases": len(o["test"]),
            "mean_test_log_px": float(np.mean(o["test"])),
            "mean_valid_log_px": float(np.mean(o["valid"])),
            "mean_rank_test": float(np.mean(o["rank"])),
            "mean_epochs": float(np.mean(o["epochs"])),
        }
        for r, o in sorted(out.items())
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="iris, two recipes, 3 epochs: seconds")
    parser.add_argument("--results-dir", default=None, help="where defaults.json goes")
    parser.add_argument("--tables", default=None, help=f"subset of {','.join(TABLES)}")
    parser.add_argument("--recipes", default=None, help=f"subset of {','.join(RECIPES)}")
    parser.add_argument("--seeds", default=None, help="split seeds, comma-separated (default 0,1)")
    parser.add_argument("--epochs", type=int, default=None, help="at most (default: fit's)")
    parser.add_argument("--eval-samples", type=int, default=None, help="importance samples (default 500)")
    args = parser.parse_args(argv)
    _common.fill_defaults(
        args,
        {
            "tables": (",".join(TABLES), "iris"),
            "recipes": (",".join(RECIPES), "default,batch128"),
            "seeds": ("0,1", "0"),
            "epochs": (pyro_vae.TrainConfig().epochs, 3),
            "eval_samples": (500, 10),
        },
    )
    tables = _common.choices_list(args.tables, TABLES, "tables", parser)
    recipes = _common.choices_list(args.recipes, tuple(RECIPES), "recipes", parser)
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = _common.setup_threads()
    path = _common.results_path(NAME, args.quick, args.results_dir)
    result = (
        json.loads(path.read_text()) if path.is_file() else {"benchmark": NAME, "runs": [], "entries": {}}
    )
    command = _common.command_line("defaults.py", argv)
    run = {"command": command, "date": _common.now(), "machine": _common.machine_info()}
    result["runs"].append(run)
    result.update(
        **run,  # the latest run's; every entry names the command that produced it
        protocol=__doc__.split("\n\n", 1)[1],
        recipes={k: {"model": m, "fit": t} for k, (m, t) in RECIPES.items()},
        torch_threads=threads,
        quick=args.quick,
    )
    for table in tables:
        raw = load_raw(table)
        for seed in seeds:
            for recipe in recipes:
                entry = run_one(raw, seed, recipe, args)
                entry.update(command=command, rows=len(raw.values))
                result["entries"][f"{table}/{seed}/{recipe}"] = entry
                _common.log(
                    f"{table}/{seed}/{recipe}: test {entry['test_log_px']:.3f} valid "
                    f"{entry['valid_log_px']:.3f} epochs {entry['epochs']} {entry['seconds']:.1f}s"
                )
                result["summary"] = summarize(result["entries"])
                _common.write_results(NAME, args.quick, result, args.results_dir)
    return result


if __name__ == "__main__":
    main()
