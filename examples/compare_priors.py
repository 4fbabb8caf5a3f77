"""Which prior? The same VAE trained under every registered prior, compared on held-out data.

python examples/compare_priors.py            # bundled digits, a few minutes on 2 CPU cores
python examples/compare_priors.py --quick    # a smoke run, seconds per prior
python examples/compare_priors.py --dataset binarized_mnist --data-dir DIR --out runs/compare_mnist

The same as `pyro-vae compare` (which also takes every flag of `pyro-vae train`): one run
directory per prior under OUT/runs/, the table in OUT/comparison.md (.csv, .json) and the
figures beside it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyro_vae.app.compare import ComparisonResult, compare_priors, default_config


def main(argv: Sequence[str] | None = None) -> ComparisonResult:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 epochs, hidden 64, K = 100")
    parser.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    parser.add_argument("--priors", help="comma-separated prior names (default: every registered prior)")
    parser.add_argument("--normal-scales", help="scales of the prior 'normal' (default 0.5,2,5)")
    parser.add_argument("--dataset", default="digits", help="digits (bundled), binarized_mnist or mnist")
    parser.add_argument("--data-dir", help="folder with the MNIST .npz files")
    parser.add_argument("--num-threads", type=int, help="torch threads (default: one per core)")
    args = parser.parse_args(argv)

    config = default_config(quick=args.quick)  # latent 2: codes and densities shown as they are
    config.data.dataset, config.data.data_dir = args.dataset, args.data_dir
    config.train.num_threads = args.num_threads
    priors = [p.strip() for p in args.priors.split(",")] if args.priors else None  # None: the registry
    scales = None
    if args.normal_scales is not None:  # "none": 'normal' at its default scale
        scales = [float(s) for s in args.normal_scales.split(",") if s.strip() not in ("", "none")]
    return compare_priors(config, priors, args.out, normal_scales=scales, progress=not args.quick)


if __name__ == "__main__":
    main()
