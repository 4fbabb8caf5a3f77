"""How far is the importance-sampled MNIST NLL from the truth? IS against AIS, and BDMC.

For each trained configuration of ``benchmarks/mnist_nll.py`` (its best weights in
``benchmarks/results/mnist_nll_checkpoints/<config>/``), on the same 1000 test images
drawn at random (seeded; the test split is sorted by digit, so its first images are all zeros):

* importance sampling with K = 5000 (``pyro_vae.evaluate``, what the MNIST table reports);
* annealed importance sampling (``pyro_vae.infer.ais.ais``: from q(z|x), sigmoidal schedule of
  ``--ais-steps`` temperatures, ``--ais-chains`` chains per point, HMC with
  ``--ais-leapfrog`` leapfrog steps and a step size adapted toward acceptance 0.65);
* their gap per point, AIS − IS (positive: IS was low), with its paired standard error;
* BDMC (``pyro_vae.infer.ais.bdmc``) on ``--bdmc-points`` images simulated from the model: the
  forward (lower) and reverse (upper) AIS bounds and their gap, which bounds the error of
  AIS with the same settings on the model's own data;
* the cost of each, in seconds per point.

Reproduce (long: on 2 cores roughly 0.02 s per point for IS and, at the defaults,
seconds per point for AIS and twice that for BDMC):

    PYRO_VAE_DATA=/path/to/data python benchmarks/ais_vs_is.py
    PYRO_VAE_DATA=/path/to/data python benchmarks/ais_vs_is.py --configs standard --test-size 200
    PYRO_VAE_DATA=/path/to/data python benchmarks/ais_vs_is.py --quick    # seconds, a tiny model

Results go to ``benchmarks/results/ais_vs_is.json`` (one entry per configuration, merged
into the existing file), or ``ais_vs_is_quick.json`` with ``--quick``, which trains a tiny
model for one epoch on 300 images instead of loading the checkpoints.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

log = _common.log
import torch  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.infer.ais import ais, bdmc  # noqa: E402
from pyro_vae.io import read_json  # noqa: E402

NAME = "ais_vs_is"
from mnist_nll import CONFIGS  # noqa: E402  (every configuration mnist_nll.py trains)

CHECKPOINTS = _common.RESULTS_DIR / "mnist_nll_checkpoints"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a.double() - b.double()).reshape(-1)
    n = d.numel()
    return {
        "mean": d.mean().item(),
        "se": d.std().item() / math.sqrt(n) if n > 1 else None,
        "min": d.min().item(),
        "max": d.max().item(),
    }


def score(vae: pyro_vae.VAE, x: torch.Tensor, args) -> dict:
    """IS, AIS and BDMC for one model on the points ``x``."""
    n = x.shape[0]
    options = {"num_leapfrog": args.ais_leapfrog, "seed": args.seed}
    is_result, is_seconds = _timed(
        lambda: pyro_vae.evaluate(vae, x, args.is_samples, seed=args.seed, progress=True)
    )
    log(
        f"  IS  K={args.is_samples}: log p(x) {is_result['log_likelihood']:.3f} ({is_seconds / n:.3f} s/point)"
    )
    run, ais_seconds = _timed(
        lambda: ais(vae, x, num_steps=args.ais_steps, num_chains=args.ais_chains, progress=True, **options)
    )
    is_pointwise = is_result["pointwise"]["log_likelihood"]
    gap = _paired(run.log_px, is_pointwise)
    log(
        f"  AIS T={args.ais_steps} M={args.ais_chains}: log p(x) {run.log_px.mean().item():.3f} "
        f"(AIS - IS {gap['mean']:+.3f} +- {gap['se'] or 0:.3f}; {ais_seconds / n:.3f} s/point)"
    )
    sandwich, bdmc_seconds = _timed(
        lambda: bdmc(vae, args.bdmc_points, num_steps=args.ais_steps, num_chains=args.ais_chains, **options)
    )
    log(
        f"  BDMC on {args.bdmc_points} simulated points: lower {sandwich.lower.mean().item():.3f}, upper "
        f"{sandwich.upper.mean().item():.3f}, gap {sandwich.gap.mean().item():.3f} "
        f"({bdmc_seconds / args.bdmc_points:.3f} s/point)"
    )
    return {
        "num_points": n,
        "importance": {
            "num_samples": args.is_samples,
            "log_likelihood": is_result["log_likelihood"],
            "log_likelihood_se": is_result["log_likelihood_se"],
            "elbo": is_result["elbo"],
            "seconds": is_seconds,
            "seconds_per_point": is_seconds / n,
        },
        "ais": {**run.summary(), "seconds": ais_seconds, "seconds_per_point": ais_seconds / n},
        "ais_minus_importance": gap,
        "bdmc": {
            **sandwich.summary(),
            "seconds": bdmc_seconds,
            "seconds_per_point": bdmc_seconds / args.bdmc_points,
        },
    }


def quick_model(splits) -> pyro_vae.VAE:
    vae = pyro_vae.VAE(784, 4, hidden=(32,), likelihood="bernoulli")
    pyro_vae.fit(vae, splits.train[:300], None, epochs=1, batch_size=100, progress=False, seed=0)
    return vae


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    parser.add_argument("--checkpoint-dir", default=str(CHECKPOINTS), help=f"default {CHECKPOINTS}")
    parser.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="N test images drawn at random with --seed (default 1000; the split is sorted by digit)",
    )
    parser.add_argument("--is-samples", type=int, default=None, help="importance samples (default 5000)")
    parser.add_argument("--ais-steps", type=int, default=None, help="AIS temperatures (default 500)")
    parser.add_argument("--ais-chains", type=int, default=None, help="AIS chains per point (default 16)")
    parser.add_argument("--ais-leapfrog", type=int, default=None, help="leapfrog steps (default 10)")
    parser.add_argument("--bdmc-points", type=int, default=None, help="simulated points (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data_dir = _common.require_data_dir(args.data_dir, parser)
    configs = _common.choices_list(args.configs, CONFIGS, "configurations", parser)
    _common.fill_defaults(
        args,
        {
            "test_size": (1000, 10),
            "is_samples": (5000, 50),
            "ais_steps": (500, 5),
            "ais_chains": (16, 2),
            "ais_leapfrog": (10, 2),
            "bdmc_points": (100, 4),
        },
    )
    threads = _common.setup_threads()
    splits = pyro_vae.data.load_binarized_mnist(data_dir)
    # The test split is sorted by digit (its first 1000 images are 980 zeros and 20 ones):
    # a seeded random subset stands for the whole test set, the first N would not.
    pick = torch.randperm(splits.test.shape[0], generator=torch.Generator().manual_seed(args.seed))
    x = splits.test[pick[: args.test_size]]
    path = _common.results_path(NAME, args.quick, args.results_dir)
    previous = read_json(path, what="previous results").get("configs", {}) if path.is_file() else {}
    result = {
        "benchmark": NAME,
        "command": _common.command_line("ais_vs_is.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quick": args.quick,
        "torch_threads": threads,
        "settings": {k: getattr(args, k) for k in ("test_size", "is_samples", "ais_steps", "ais_chains")}
        | {
            "test_points": f"{args.test_size} test images drawn at random (seed {args.seed}); the split is sorted by digit"
        }
        | {"ais_leapfrog": args.ais_leapfrog, "bdmc_points": args.bdmc_points, "seed": args.seed},
        "configs": previous,
    }
    if args.quick:
        result["note"] = "QUICK smoke run: a tiny model trained for one epoch; numbers meaningless"
        configs = ["quick"]
    for config in configs:
        if args.quick:
            vae = quick_model(splits)
        else:
            model_dir = Path(args.checkpoint_dir) / config
            if not (model_dir / "model.pt").is_file():
                log(f"[{config}] no trained model in {model_dir}: run benchmarks/mnist_nll.py first; skipped")
                continue
            vae = pyro_vae.VAE.load(model_dir)
        log(f"[{config}] {x.shape[0]} test points")
        entry = score(vae, x, args)
        entry["date"] = _common.now()
        entry["command"] = result["command"]
        # merged entries may come from runs with other settings or threads: each keeps its own
        entry["torch_threads"], entry["settings"] = threads, result["settings"]
        entry["load_average_1_5_15_min"] = _common.machine_info()["load_average_1_5_15_min"]
        result["configs"][config] = entry
        _common.write_results(NAME, args.quick, result, args.results_dir)
    _common.write_results(NAME, args.quick, result, args.results_dir)
    log(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
