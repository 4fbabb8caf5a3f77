"""Command line: ``pyro-vae train``, ``evaluate``, ``compare`` and ``diagnose``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from pyro_vae import likelihoods, priors
from pyro_vae.app.config import RunConfig
from pyro_vae.data import DATASETS
from pyro_vae.distributed import PeerFailure
from pyro_vae.io import atomic_write_json
from pyro_vae.networks import ACTIVATIONS
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.training import TrainingDiverged

# flag -> (config section, field)
TRAIN_FLAGS = {
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "data_path": ("data", "path"),
    "label_column": ("data", "label_column"),
    "dequantize": ("data", "dequantize"),
    "standardize": ("data", "standardize"),
    "latent_dim": ("model", "latent_dim"),
    "hidden": ("model", "hidden"),
    "likelihood": ("model", "likelihood"),
    "likelihood_options": ("model", "likelihood_options"),
    "prior": ("model", "prior"),
    "prior_options": ("model", "prior_options"),
    "activation": ("model", "activation"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "loss": ("train", "loss"),
    "num_particles": ("train", "num_particles"),
    "beta": ("train", "beta"),
    "warmup_epochs": ("train", "warmup_epochs"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "patience": ("train", "patience"),
    "num_threads": ("train", "num_threads"),
    "max_minutes": ("train", "max_minutes"),
    "ddp_timeout": ("train", "ddp_timeout_s"),
    "eval_samples": ("eval", "num_samples"),
    "eval_split": ("eval", "split"),
}


def _hidden(text: str) -> list[int]:
    if text.strip() in ("", "none", "linear"):
        return []
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes comma-separated widths like 256,256, got {text!r}"
        ) from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError("hidden widths must be positive")
    return widths


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"scale\": 0.1}}', got {text!r}")
    return value


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated prior names, got {text!r}")
    return names


def _scales(text: str) -> list[float]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--normal-scales takes comma-separated numbers like 0.5,2,5, got {text!r}"
        ) from None


def _patience(text: str) -> int | None:
    value = int(text)
    return None if value <= 0 else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-vae", description="Variational autoencoders as Pyro models.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train, evaluate and report a VAE", description="Train, evaluate and report a VAE."
    )
    t.add_argument("--config", type=Path, help="a run config JSON (or a run directory) to start from")
    t.add_argument(
        "--out", type=Path, default=Path("runs/latest"), help="output directory (default runs/latest)"
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (its config by default)",
    )
    t.add_argument(
        "--nproc", type=int, help="train in N processes on this machine (DDP, launched with torchrun)"
    )
    add_run_flags(t)

    c = sub.add_parser(
        "compare",
        help="train the same VAE under every prior and compare them",
        description="Train the same VAE (data, seed, networks, budget) under each prior; write "
        "comparison.md/.csv/.json, figures and one run directory per prior.",
    )
    c.add_argument("--config", type=Path, help="a run config JSON (or a run directory) to start from")
    c.add_argument(
        "--out", type=Path, default=Path("runs/compare"), help="output directory (default runs/compare)"
    )
    c.add_argument(
        "--priors",
        type=_names,
        help=f"comma-separated prior names (default: every registered prior: {','.join(priors.names())})",
    )
    c.add_argument(
        "--normal-scales",
        type=_scales,
        help="scales at which the prior 'normal' runs, e.g. 0.5,2,5 (the default); 'none': its default scale",
    )
    c.add_argument(
        "--quick", action="store_true", help="a smoke run: 10 epochs, hidden 64, 100 importance samples"
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_run_flags(c, with_prior=False)

    e = sub.add_parser("evaluate", help="re-evaluate a saved run", description="Re-evaluate a saved run.")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--num-samples", type=int)
    e.add_argument("--split", choices=["train", "valid", "test"])
    e.add_argument("--data-dir")
    e.add_argument("--output", type=Path, help="also write the metrics as JSON here")
    e.add_argument("--no-progress", action="store_true")

    d = sub.add_parser(
        "diagnose",
        help="ArviZ diagnostics of a saved run's amortized posterior",
        description="PSIS k-hat of the importance weights, NUTS posteriors of single points against "
        "q(z|x), posterior predictive checks (docs/diagnostics.md).",
    )
    d.add_argument("run_dir", type=Path)
    d.add_argument("--num-samples", type=int, default=1000, help="draws from q(z|x) per point (default 1000)")
    d.add_argument(
        "--num-points", type=int, default=200, help="N points of the split, drawn at random (default 200)"
    )
    d.add_argument(
        "--nuts-points", type=int, default=2, help="points (largest k-hat) sampled by NUTS (default 2)"
    )
    d.add_argument("--nuts-chains", type=int, default=2)
    d.add_argument("--nuts-warmup", type=int, default=500)
    d.add_argument("--nuts-draws", type=int, default=500)
    d.add_argument("--is-samples", type=int, default=10000, help="draws for the NUTS points' log p(x)")
    d.add_argument("--split", choices=["train", "valid", "test"])
    d.add_argument("--data-dir")
    d.add_argument("--out", type=Path, help="output directory (default: the run directory)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")
    return parser


def add_run_flags(parser: argparse.ArgumentParser, with_prior: bool = True) -> None:
    """The data, model, training and evaluation flags of a run (``TRAIN_FLAGS``)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, help="default digits (bundled)")
    g.add_argument("--data-dir", help="folder with the MNIST .npz files (default $PYRO_VAE_DATA)")
    g.add_argument("--data-path", help="file for --dataset csv or npy")
    g.add_argument("--label-column", help="CSV column holding labels (name or index)")
    g.add_argument(
        "--dequantize", action=argparse.BooleanOptionalAction, help="uniform dequantization of grey levels"
    )
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, help="per-feature standardization")
    g = parser.add_argument_group("model")
    g.add_argument("--latent-dim", type=int)
    g.add_argument("--hidden", type=_hidden, help="widths, e.g. 256,256; 'linear' for none")
    g.add_argument("--likelihood", choices=["auto", *likelihoods.names()])
    g.add_argument("--likelihood-options", type=_json_object, help="JSON, e.g. '{\"min_scale\": 0.01}'")
    if with_prior:
        g.add_argument("--prior", choices=priors.names())
        g.add_argument("--prior-options", type=_json_object, help="JSON, e.g. '{\"num_components\": 20}'")
    g.add_argument("--activation", choices=sorted(ACTIVATIONS))
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--loss", choices=OBJECTIVES)
    g.add_argument("--num-particles", type=int)
    g.add_argument("--beta", type=float, help="KL weight (1 = the ELBO)")
    g.add_argument("--warmup-epochs", type=float, help="linear KL warm-up from 0 to --beta")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu, cuda or auto")
    g.add_argument("--patience", type=_patience, help="early-stopping patience in epochs (0: off)")
    g.add_argument("--num-threads", type=int)
    g.add_argument("--max-minutes", type=float, help="stop training after the epoch that spends this budget")
    g.add_argument("--ddp-timeout", type=float, help="seconds a process waits for the others (default 120)")
    g = parser.add_argument_group("evaluation")
    g.add_argument("--eval-samples", type=int, help="importance samples for log p(x) (default 1000)")
    g.add_argument("--eval-split", choices=["train", "valid", "test"])


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config of ``train`` or ``compare``: a config file or the defaults, then the flags."""
    if args.config:
        cfg = RunConfig.from_json(args.config)
    elif getattr(args, "resume", False):
        cfg = RunConfig.from_json(args.out)
    elif args.command == "compare":
        from pyro_vae.app.compare import default_config

        cfg = default_config()
    else:
        cfg = RunConfig()
    if getattr(args, "quick", False):
        from pyro_vae.app.compare import make_quick

        make_quick(cfg)
    for flag, (section, name) in TRAIN_FLAGS.items():
        value = getattr(args, flag, None)  # compare has no --prior flags
        if value is not None:
            setattr(getattr(cfg, section), name, value)
    return cfg


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pyro_vae import distributed
    from pyro_vae.app.run import evaluate_run, launched_by_torchrun, train_run

    if args.command == "train" and args.nproc is not None and not launched_by_torchrun():
        if args.nproc < 1:
            print("pyro-vae: error: --nproc must be at least 1", file=sys.stderr)
            return 2
        if args.nproc > 1:
            return distributed.launch(args.nproc, _without_nproc(argv))
    ok = False
    try:
        if args.command == "train":
            train_run(config_from_args(args), args.out, progress=not args.no_progress, resume=args.resume)
        elif args.command == "compare":
            if launched_by_torchrun():
                raise ValueError(
                    "compare trains the priors one after another in one process: run it without torchrun"
                )
            failed = _compare(args)
            ok = True
            return 1 if failed else 0
        elif args.command == "diagnose":
            from pyro_vae.app.diagnose import diagnose_run

            diagnose_run(
                args.run_dir,
                num_samples=args.num_samples,
                num_points=args.num_points,
                nuts_points=args.nuts_points,
                nuts_chains=args.nuts_chains,
                nuts_warmup=args.nuts_warmup,
                nuts_draws=args.nuts_draws,
                num_is_samples=args.is_samples,
                split=args.split,
                data_dir=args.data_dir,
                out=args.out,
                seed=args.seed,
                progress=not args.no_progress,
            )
        else:
            metrics = evaluate_run(
                args.run_dir,
                num_samples=args.num_samples,
                split=args.split,
                data_dir=args.data_dir,
                progress=not args.no_progress,
            )
            if args.output:
                atomic_write_json(args.output, metrics)
        ok = True
    except TrainingDiverged as e:
        print(f"pyro-vae: training diverged: {e}", file=sys.stderr)
        return 1
    except PeerFailure as e:
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as e:
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown(barrier=ok)  # after a failure the others may be gone
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Run ``pyro-vae compare``; returns how many priors failed (the others are reported all the same)."""
    from pyro_vae.app.compare import compare_priors

    result = compare_priors(
        config_from_args(args),
        args.priors,
        args.out,
        normal_scales=args.normal_scales,
        progress=not args.no_progress,
        command=shlex.join(["pyro-vae", *args.argv]),
    )
    for r in result.failed:
        print(f"pyro-vae: prior {r.entry.label} failed: {r.error}", file=sys.stderr)
    return len(result.failed)


def console_main() -> None:
    """Entry point of ``pyro-vae`` and ``python -m pyro_vae``.

    A process started by torchrun ends through :func:`pyro_vae.distributed.exit_process`,
    which skips interpreter finalisation (see there why).
    """
    code = main()
    from pyro_vae import distributed
    from pyro_vae.app.run import launched_by_torchrun

    if launched_by_torchrun():
        distributed.exit_process(code, barrier=False)  # main() already waited for the others
    sys.exit(code)


if __name__ == "__main__":
    console_main()
