r"""The static binarized MNIST log-likelihood benchmark: test NLL with 5000 importance samples.

Reproduce (from the repository root; long: up to --max-minutes of training per configuration
plus roughly 5-15 minutes of evaluation each on 2 cores):

    PYRO_VAE_DATA=/path/to/data python benchmarks/mnist_nll.py                      # all configurations
    PYRO_VAE_DATA=/path/to/data python benchmarks/mnist_nll.py --configs standard,vamp --max-minutes 120
    PYRO_VAE_DATA=/path/to/data python benchmarks/mnist_nll.py --quick              # seconds, smoke test

Protocol (Tomczak & Welling 2018 for the first three): one stochastic layer of 40 dimensions,
two hidden layers of 300 ReLU units in the encoder and in the decoder, Bernoulli likelihood,
Adam (lr 5e-4), batch 100, linear KL warm-up over the first 100 epochs, at most 2000 epochs,
early stopping on the validation ELBO with a patience of 50 epochs (best weights kept),
and test log p(x) estimated with K = 5000 importance samples on the 10000 test images
(Larochelle & Murray's split, 50000/10000/10000). Configurations:

* ``standard``: N(0, I) prior;
* ``mixture``: a learned mixture of 500 diagonal Gaussians (as many components as the
  VampPrior has pseudo-inputs, the "MoG" comparison of Tomczak & Welling);
* ``vamp``: VampPrior with 500 pseudo-inputs (initialised at random training images);
* ``iwae``: ``loss="iwae"`` with ``num_particles=50`` (Burda et al. 2015), N(0, I) prior, no
  warm-up by default (``--iwae-warmup-epochs``);
* ``gated``: Tomczak & Welling's own networks, ``network="gated"``: gated dense layers
  :math:`h = (W_1 x + b_1) \odot \sigma(W_2 x + b_2)`, 300-300 in the encoder and in the
  decoder, 40 latent dimensions, N(0, I) prior, with the protocol above (warm-up 100 epochs,
  patience 50, lr 5e-4, batch 100); their published VAE figure, 88.56, is the target.
* ``gated_vamp``: the same networks and protocol with the VampPrior (500 pseudo-inputs);
  their published 85.57 is the target.

``--max-minutes`` bounds each configuration's training in this session (the epoch in
progress finishes). Training adds up across sessions: each configuration keeps its
checkpoint *in the repository*, ``benchmarks/results/mnist_nll_checkpoints/<config>/``
(``model.pt``: the best weights; ``training_state.pt``: current weights, Adam state,
early-stopping counters, every random generator, the history; ``config.json``,
``history.csv``; about 11 MB, 16 MB for ``vamp``), replaced after every epoch, and every
run continues from it by default (``--fresh`` starts over) until early stopping with the
protocol's patience ends it; a configuration that has early-stopped is not trained again
(its last entry is kept). Commit the checkpoint
directory with the results file at the end of a session. Each slice is recorded under
``training.slices``: start and end (ISO times), epochs, training and wall seconds, the
command, threads, and the machine's load averages at both ends (``os.getloadavg()``).
pyro_vae's ``fit(max_seconds=...)`` is used when it exists, otherwise fit is called in chunks
of epochs and the restarts of Adam are recorded. Published numbers need long training: a
configuration stopped by the budget, or before its warm-up ended, is flagged as such. Results
are written after every configuration, merged into the existing results file (one entry per
configuration, each with its own date and command), and every trained model is saved to
``--out-dir`` (default ``benchmarks/results/mnist_nll_checkpoints``, committed).
``benchmarks/ais_vs_is.py`` then scores the same models by AIS and BDMC.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

log = _common.log
import pyro  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.distributions.priors import MixturePrior, VampPrior  # noqa: E402
from pyro_vae.infer.training import TRAINING_STATE_FILE  # noqa: E402
from pyro_vae.io import load_tensors, read_json  # noqa: E402

NAME = "mnist_nll"
CONFIGS = ("standard", "mixture", "vamp", "iwae", "gated", "gated_vamp")
DEFAULT_OUT_DIR = _common.RESULTS_DIR / "mnist_nll_checkpoints"
LEGACY_OUT_DIR = (
    _common.RESULTS_DIR / "mnist_nll_models"
)  # git-ignored; used before the checkpoints were kept
REFERENCES = {
    "standard": {"log_likelihood": -88.56, "source": "Tomczak & Welling 2018, Table 1 (VAE, standard prior)"},
    "vamp": {"log_likelihood": -85.57, "source": "Tomczak & Welling 2018, Table 1 (VAE, VampPrior)"},
    "iwae": {
        "log_likelihood": -87.10,
        "source": "Burda et al. 2015, appendix (IWAE, k=50), as given in the brief",
    },
    "mixture": {"log_likelihood": None, "source": "no fixed reference: must beat the standard prior"},
    "gated": {
        "log_likelihood": -88.56,
        "source": "Tomczak & Welling 2018 (VAE, standard prior, GatedDense 300-300, 40 latent)",
    },
    "gated_vamp": {
        "log_likelihood": -85.57,
        "source": "Tomczak & Welling 2018 (VAE, VampPrior with 500 pseudo-inputs, GatedDense 300-300, 40 latent)",
    },
}
TARGET_NLL = {"standard": 88.6, "vamp": 85.6, "iwae": 87.1, "gated": 88.56, "gated_vamp": 85.57}


def build(config: str, components: int) -> tuple[pyro_vae.VAE, dict]:
    """The VAE of one configuration and the fit options that go with it."""
    prior: object = "standard_normal"
    fit_options: dict = {"loss": "elbo", "num_particles": 1}
    if config == "mixture":
        prior = MixturePrior(num_components=components)
    elif config in ("vamp", "gated_vamp"):
        prior = VampPrior(num_components=components)
    elif config == "iwae":
        fit_options = {"loss": "iwae", "num_particles": 50}
    network = "gated" if config.startswith("gated") else "mlp"
    vae = pyro_vae.VAE(784, 40, hidden=(300, 300), likelihood="bernoulli", prior=prior, network=network)
    return vae, fit_options


def target_check(config: str, nll: float, configs: dict) -> dict:
    if config in TARGET_NLL:
        t = TARGET_NLL[config]
        return {
            "target": f"NLL <= {t}",
            "met": nll <= t,
            "by_nats": round(t - nll, 3),
            "note": "by_nats > 0: better than the target by that much; < 0: missed by that much",
        }
    standard = configs.get("standard", {}).get("test")
    if standard is None:
        return {"target": "NLL below the standard prior's", "met": None, "note": "no standard result yet"}
    s = standard["nll"]
    return {
        "target": "NLL below the standard prior's",
        "standard_nll": s,
        "standard_date": configs["standard"]["run"]["date"],
        "met": nll < s,
        "by_nats": round(s - nll, 3),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def finished(config: str, args, previous: dict | None) -> bool:
    """Has this configuration early-stopped in an earlier session (so that there is nothing to train)?"""
    if not args.resume or not previous or "training" not in previous:
        return False
    done = previous["training"].get("converged_by_early_stopping", False)
    return bool(done) and (Path(args.out_dir) / config / TRAINING_STATE_FILE).is_file()


def run_config(config: str, args, splits, log, previous: dict | None = None) -> dict:
    """Train and evaluate one configuration; ``previous`` is its last results entry (for --resume)."""
    if finished(config, args, previous):
        log(f"[{config}] early-stopped in an earlier session: nothing to train (--fresh starts it over)")
        return previous
    components = args.components
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae, fit_options = build(config, components)
    warmup = args.iwae_warmup_epochs if config == "iwae" else args.warmup_epochs
    beta = {"end": 1.0, "warmup_epochs": float(warmup)}
    out_dir = Path(args.out_dir) / config
    resume = bool(args.resume) and (out_dir / TRAINING_STATE_FILE).is_file()
    if args.resume and not resume:
        log(f"[{config}] no {TRAINING_STATE_FILE} in {out_dir}: starting afresh")
    resumed_after, trained_seconds = 0, 0.0
    if resume:  # fit overwrites the state; read where it stands first
        state = load_tensors(out_dir / TRAINING_STATE_FILE, what="training state")
        resumed_after, trained_seconds = int(state["epoch"]), float(state["elapsed"])
    log(
        f"[{config}] training: up to {args.epochs} epochs / {args.max_minutes} min, warm-up {warmup} epochs, "
        f"{fit_options}, prior {vae.prior.spec()}"
    )
    fit_kwargs = dict(
        batch_size=args.batch_size,
        lr=args.lr,
        progress=False,
        num_threads=_common.THREADS,
        checkpoint_dir=str(out_dir),
        resume=resume,
        **fit_options,
    )
    slice_start, load_start, wall_start = _common.now(), _load_average(), time.perf_counter()
    training = _common.fit_with_budget(
        vae,
        splits.train,
        splits.valid,
        epochs=args.epochs,
        # fit's budget counts the whole run's training time, earlier slices included;
        # --max-minutes is this slice's share, so it is added to what was spent before
        max_seconds=None if args.max_minutes is None else trained_seconds + 60 * args.max_minutes,
        patience=args.patience,
        beta=beta,
        seed=args.seed,
        log=log,
        **fit_kwargs,
    )
    records = training.pop("records")
    earlier = _earlier_slices(previous, records[:resumed_after]) if resume else []
    training["resumed"] = resume
    if resume:
        training["resumed_after_epoch"] = resumed_after
    this_slice = {
        "date": _common.now(),
        "start": slice_start,
        "end": _common.now(),
        "command": _common.command_line("mnist_nll.py", args.argv),
        "torch_threads": _common.THREADS,
        "epochs_run_in_slice": training["epochs_run"] - resumed_after,
        "training_seconds": training["training_seconds"],
        "wall_seconds": time.perf_counter() - wall_start,
        "load_average_1_5_15_min_start": load_start,
        "load_average_1_5_15_min_end": _load_average(),
    }
    training["slices"] = [*earlier, this_slice]
    training["training_seconds_all_slices"] = sum(e["training_seconds"] for e in training["slices"])
    last_beta = records[-1]["beta"] if records else math.nan
    log(
        f"[{config}] {training['epochs_run']} epochs in {training['training_seconds']:.0f} s "
        f"(best {training['best_epoch']}, stopped by {training['stopped_by']}); evaluating K={args.eval_samples}"
    )
    start = time.perf_counter()
    metrics = pyro_vae.evaluate(vae, splits.test, num_samples=args.eval_samples, seed=args.seed)
    eval_seconds = time.perf_counter() - start
    valid_elbos = [r["valid_elbo"] for r in records]
    entry = {
        "run": {
            "date": _common.now(),
            "command": _common.command_line("mnist_nll.py", args.argv),
            "quick": args.quick,
            "torch_threads": _common.THREADS,
            "machine_load_average_1_5_15_min": _common.machine_info()["load_average_1_5_15_min"],
        },
        "settings": {
            "network": vae.network,
            "hidden": list(vae.hidden),
            "prior": vae.prior.spec(),
            "loss": fit_options["loss"],
            "num_particles": fit_options["num_particles"],
            "beta": beta,
            "epochs_max": args.epochs,
            "max_minutes": args.max_minutes,
            "patience": args.patience,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "eval_samples": args.eval_samples,
            "train_points": splits.train.shape[0],
            "valid_points": splits.valid.shape[0],
            "test_points": splits.test.shape[0],
            "seed": args.seed,
        },
        "test": {
            "nll": -metrics["log_likelihood"],
            "nll_se": metrics["log_likelihood_se"],
            "log_likelihood": metrics["log_likelihood"],
            "elbo": metrics["elbo"],
            "kl": metrics["kl"],
            "reconstruction": metrics["reconstruction"],
            "active_units": metrics["active_units"],
        },
        "training": {
            **training,
            "best_valid_elbo": max((v for v in valid_elbos if v == v), default=None),
            "final_train_loss": records[-1]["train_loss"] if records else None,
            "beta_at_end": last_beta,
            "warmup_completed": bool(last_beta >= 1.0),
            "converged_by_early_stopping": training["stopped_by"] == "early_stopping",
        },
        "evaluation_seconds": eval_seconds,
        "reference": REFERENCES[config],
        "model_dir": _common.repo_relative(out_dir),
    }
    vae.save(out_dir, extra={"mnist_nll_benchmark": {k: entry[k] for k in ("run", "settings", "test")}})
    log(
        f"[{config}] test NLL {entry['test']['nll']:.2f} +- {entry['test']['nll_se']:.2f} nats, "
        f"ELBO {entry['test']['elbo']:.2f}, KL {entry['test']['kl']:.2f}, active units "
        f"{entry['test']['active_units']}, evaluation {eval_seconds:.0f} s"
    )
    return entry


def _earlier_slices(previous: dict | None, records_before: list[dict]) -> list[dict]:
    """The training slices before a resumed one.

    Those recorded in the configuration's previous results entry, and, for epochs of the
    checkpoint that no entry accounts for (a run that stopped before writing its results),
    one slice built from the checkpoint's history: its epochs and their loop seconds.
    """
    training = (previous or {}).get("training", {})
    if "slices" in training:
        slices = list(training["slices"])
    elif "epochs_run" in training:
        run = previous.get("run", {})
        slices = [
            {
                "date": run.get("date"),
                "command": run.get("command"),
                "torch_threads": run.get("torch_threads"),
                "epochs_run_in_slice": training["epochs_run"],
                "training_seconds": training["training_seconds"],
            }
        ]
    else:
        slices = []
    recorded = sum(e["epochs_run_in_slice"] for e in slices)
    if recorded > len(records_before):  # entries from another checkpoint: trust the checkpoint
        slices, recorded = [], 0
    missing = records_before[recorded:]
    if missing:
        slices.append(
            {
                "date": None,
                "command": None,
                "torch_threads": None,
                "epochs_run_in_slice": len(missing),
                "training_seconds": sum(r["seconds"] for r in missing),
                "note": "not in the results file (its run stopped before writing them): epochs and "
                "epoch-loop seconds from the checkpoint's history",
            }
        )
    return slices


def adopt_legacy_checkpoints(configs: list[str], log) -> None:
    """Copy a configuration's checkpoint from the old, git-ignored directory when the kept one has none."""
    for config in configs:
        old, new = LEGACY_OUT_DIR / config, DEFAULT_OUT_DIR / config
        if (old / TRAINING_STATE_FILE).is_file() and not (new / TRAINING_STATE_FILE).is_file():
            shutil.copytree(old, new, dirs_exist_ok=True)
            log(f"[{config}] continuing the checkpoint of {old} in {new}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="training budget per configuration (default 60)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default 2000)")
    parser.add_argument(
        "--patience", type=int, default=None, help="early-stopping patience in epochs (default 50)"
    )
    parser.add_argument("--warmup-epochs", type=float, default=None, help="linear KL warm-up (default 100)")
    parser.add_argument(
        "--iwae-warmup-epochs", type=float, default=0.0, help="KL warm-up for iwae (default 0)"
    )
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=None, help="importance samples (default 5000)")
    parser.add_argument(
        "--components", type=int, default=None, help="mixture components / pseudo-inputs (500)"
    )
    parser.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    parser.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help=f"trained models (default {DEFAULT_OUT_DIR})")
    parser.add_argument(
        "--resume",
        action="store_true",
        default=True,
        help="continue each configuration from its checkpoint in --out-dir (the default; "
        "--max-minutes is this slice's budget)",
    )
    parser.add_argument("--fresh", dest="resume", action="store_false", help="start every configuration over")
    args = parser.parse_args(argv)
    args.argv = argv
    data_dir = _common.require_data_dir(args.data_dir, parser)
    quick = args.quick
    configs = _common.choices_list(args.configs, CONFIGS, "configurations", parser)
    _common.fill_defaults(
        args,
        {
            "max_minutes": (60.0, 0.1),
            "epochs": (2000, 2),
            "patience": (50, 5),
            "warmup_epochs": (100.0, 1.0),
            "eval_samples": (5000, 20),
            "components": (500, 10),
            "train_size": (None, 300),
            "test_size": (None, 20),
        },
    )
    scratch = None
    if args.out_dir is None:
        if quick:  # smoke-run models are not kept
            scratch = tempfile.TemporaryDirectory(prefix="mnist_nll_quick_")
            args.out_dir = scratch.name
        else:
            args.out_dir = str(DEFAULT_OUT_DIR)
            adopt_legacy_checkpoints(configs, log)

    threads = _common.setup_threads()
    splits = pyro_vae.data.load_binarized_mnist(data_dir)
    if args.train_size:
        splits.train = splits.train[: args.train_size]
        splits.valid = splits.valid[: max(100, args.train_size // 5)]
    if args.test_size:
        splits.test = splits.test[: args.test_size]

    path = _common.results_path(NAME, quick, args.results_dir)
    previous = {}
    if path.is_file():
        try:
            previous = read_json(path, what="previous results").get("configs", {})
        except ValueError:  # damaged: start afresh
            previous = {}
    result = {
        "benchmark": NAME,
        "command": _common.command_line("mnist_nll.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quick": quick,
        "protocol": "784-300-300-40 encoder, 40-300-300-784 Bernoulli decoder, Adam, early stopping on the "
        "validation ELBO, KL warm-up, test log p(x) by importance sampling (pyro_vae.evaluate)",
        "targets": {
            "standard": "NLL <= 88.6",
            "mixture": "NLL below standard",
            "vamp": "NLL <= 85.6",
            "iwae": "NLL <= 87.1",
            "gated": "NLL <= 88.56",
            "gated_vamp": "NLL <= 85.57",
        },
        "torch_threads": threads,
        "configs": previous,
    }
    if quick:
        result["note"] = "QUICK smoke run: tiny data and budgets, 10 prior components; numbers meaningless"
    for config in configs:
        try:
            entry = run_config(config, args, splits, log, previous.get(config))
        except pyro_vae.TrainingDiverged as e:
            entry = {"run": {"date": _common.now(), "command": result["command"]}, "error": str(e)}
            log(f"[{config}] FAILED: {e}")
        result["configs"][config] = entry
        for name, e in result["configs"].items():
            if "test" in e:
                e["target_check"] = target_check(name, e["test"]["nll"], result["configs"])
        _common.write_results(NAME, quick, result, args.results_dir)  # after every configuration
    if scratch is not None:
        scratch.cleanup()
        for e in result["configs"].values():
            e["model_dir"] = "(quick run: not kept)"
        _common.write_results(NAME, quick, result, args.results_dir)
    print_report(result)
    log(f"wrote {path}")
    return result


def print_report(r: dict) -> None:
    print()
    print(f"Binarized MNIST test NLL (nats), {r['machine']['processor']}, {r['torch_threads']} threads")
    print(
        f"{'config':<9} {'NLL':>8} {'+-se':>6} {'-ELBO':>8} {'KL':>7} {'AU':>3} {'epochs':>6} {'best':>5} "
        f"{'stop':>15} {'train s':>8} {'eval s':>7} {'reference':>9}  target"
    )
    for name, e in r["configs"].items():
        if "test" not in e:
            print(f"{name:<9} {e.get('error', 'no result')}")
            continue
        t, tr, ref, chk = e["test"], e["training"], e["reference"], e.get("target_check", {})
        ref_nll = f"{-ref['log_likelihood']:.2f}" if ref.get("log_likelihood") is not None else "-"
        met = {True: "met", False: "MISSED", None: "?"}[chk.get("met")]
        by = f" ({chk['by_nats']:+.2f})" if "by_nats" in chk else ""
        print(
            f"{name:<9} {t['nll']:8.2f} {t['nll_se']:6.2f} {-t['elbo']:8.2f} {t['kl']:7.2f} {t['active_units']:3d} "
            f"{tr['epochs_run']:6d} {str(tr['best_epoch']):>5} {tr['stopped_by']:>15} "
            f"{tr['training_seconds']:8.0f} {e['evaluation_seconds']:7.0f} {ref_nll:>9}  {chk.get('target', '')}: "
            f"{met}{by}{'' if tr['warmup_completed'] else ' [warm-up NOT completed]'}"
        )
    if r.get("note"):
        print(r["note"])


if __name__ == "__main__":
    main()
