"""Likelihoods on grayscale MNIST: test bits/dim of each continuous likelihood, same networks.

Reproduce (from the repository root; long: up to --max-minutes of training per likelihood plus
the evaluation, six likelihoods):

    PYRO_VAE_DATA=/path/to/data python benchmarks/likelihoods.py                  # -> results/likelihoods.json
    PYRO_VAE_DATA=/path/to/data python benchmarks/likelihoods.py --likelihoods beta,laplace --max-minutes 30
    PYRO_VAE_DATA=/path/to/data python benchmarks/likelihoods.py --quick          # seconds, smoke test

Data: ``pyro_vae.data.load_mnist(dir, dequantize=True)``, i.e. ``(x + u) / 256`` with
``u ~ U[0, 1)``; training draws fresh dequantization noise for every batch. The same
networks for every likelihood (784-300-300-40 Gaussian encoder, 40-300-300 decoder with as
many outputs per pixel as the likelihood has parameters), N(0, I) prior, Adam, early
stopping on the validation ELBO, trained with ``pyro_vae.fit``; test log p(x) with
``pyro_vae.evaluate(..., log_abs_det_jacobian=splits.preprocessing.log_abs_det_jacobian(784))``,
so ``bits_per_dim`` is in raw grey-level units (0..255, 256 levels): the density of the
[0, 1]-scaled data plus the Jacobian of the scaling, -(log p(y) - 784 log 256) / (784 ln 2).
Lower is better; 8 bits/dim is a uniform distribution over the 256 levels.

Likelihoods: ``gaussian``, ``gaussian_shared``, ``continuous_bernoulli``, ``beta``, ``laplace``,
and ``bernoulli`` with ``pyro_vae.distributions.likelihoods.Bernoulli(strict=False)`` on the same grey
levels. The last is NOT a valid density on [0, 1] (the cross-entropy of grey levels is not
normalised): its bits/dim are printed and saved, marked "not a valid density: its bits/dim
are not comparable".

Note: ``(x + u) / 256`` computed in float32 can give exactly 0.0 (u = 0) or exactly 1.0
(x = 255 and u within 2**-16 of 1, rounded up), outside the open interval the Beta
likelihood scores. Every likelihood therefore gets the data clamped to
[2**-32, 1 - 2**-24] (2**-32 is the smallest positive value the dequantization produces, and
1 - 2**-24 the float32 just below 1; the count of clamped values is recorded): this moves a
handful of values by less than 1e-7 and does not change any other likelihood's figures.
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
import pyro  # noqa: E402
import torch  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.data import TensorBatches  # noqa: E402

NAME = "likelihoods"
LIKELIHOODS = ("gaussian", "gaussian_shared", "continuous_bernoulli", "beta", "laplace", "bernoulli")
NOT_A_DENSITY = "not a valid density: its bits/dim are not comparable"
LOW, HIGH = 2.0**-32, 1.0 - 2.0**-24  # the smallest value (x + u) / 256 takes above 0; the float below 1


def make_likelihood(name: str):
    if name == "bernoulli":
        return pyro_vae.distributions.likelihoods.Bernoulli(strict=False)
    return name


def clamp_count(x: torch.Tensor) -> int:
    """Values outside the open interval (0, 1), which the clamp moves inside."""
    return int(((x < LOW) | (x > HIGH)).sum())


def build_vae(name: str, network: str = "mlp") -> pyro_vae.VAE:
    """The VAE of one likelihood: 784-300-300-40 dense networks, or the built-in ``conv``
    networks on (1, 28, 28) images (the flat data are reshaped by the VAE)."""
    if network == "mlp":
        return pyro_vae.VAE(784, 40, hidden=(300, 300), likelihood=make_likelihood(name))
    return pyro_vae.VAE((1, 28, 28), 40, network=network, likelihood=make_likelihood(name))


def run_likelihood(name: str, args, data: dict, log, network: str = "mlp") -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae = build_vae(name, network)
    log(f"[{name}] training: up to {args.epochs} epochs / {args.max_minutes} min")
    training = _common.fit_with_budget(
        vae,
        data["train"],
        data["valid"],
        epochs=args.epochs,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
        patience=args.patience,
        seed=args.seed,
        log=log,
        batch_size=args.batch_size,
        lr=args.lr,
        progress=False,
        num_threads=_common.THREADS,
        device=getattr(args, "device", "cpu"),
    )
    records = training.pop("records")
    start = time.perf_counter()
    metrics = pyro_vae.evaluate(
        vae,
        data["test"],
        num_samples=args.eval_samples,
        seed=args.seed,
        log_abs_det_jacobian=data["log_abs_det_jacobian"],
    )
    eval_seconds = time.perf_counter() - start
    to_bits = 1.0 / (784 * math.log(2))
    entry = {
        "likelihood": vae.likelihood.spec(),
        "network": vae.network,
        "parameters": sum(p.numel() for p in vae.parameters()),
        "valid_density": name != "bernoulli",
        "test": {
            "bits_per_dim": metrics.get("bits_per_dim"),
            "bits_per_dim_se": metrics["log_likelihood_se"] * to_bits,
            "log_likelihood_scaled_nats": metrics["log_likelihood"],
            "log_likelihood_raw_nats": metrics["log_likelihood"] + data["log_abs_det_jacobian"],
            "elbo_bits_per_dim": -(metrics["elbo"] + data["log_abs_det_jacobian"]) * to_bits,
            "kl_nats": metrics["kl"],
            "active_units": metrics["active_units"],
        },
        "training": {
            **training,
            "best_valid_elbo": max(
                (r["valid_elbo"] for r in records if r["valid_elbo"] == r["valid_elbo"]), default=None
            ),
            "final_train_loss": records[-1]["train_loss"] if records else None,
        },
        "evaluation_seconds": eval_seconds,
    }
    if name == "bernoulli":
        entry["note"] = NOT_A_DENSITY
    log(
        f"[{name}] {entry['test']['bits_per_dim']:.3f} bits/dim (+- {entry['test']['bits_per_dim_se']:.3f}), "
        f"{training['epochs_run']} epochs, {training['training_seconds']:.0f} s training, {eval_seconds:.0f} s evaluation"
        + (f"  [{NOT_A_DENSITY}]" if name == "bernoulli" else "")
    )
    return entry


# (full, quick) defaults of the options left unset
DEFAULTS = {
    "epochs": (200, 1),
    "max_minutes": (20.0, 0.1),
    "train_size": (50000, 300),
    "valid_size": (10000, 100),
    "test_size": (10000, 20),
    "eval_samples": (1000, 10),
    "patience": (20, 5),
}


def add_training_arguments(parser) -> None:
    """The training, data-size and evaluation options (shared with ``networks.py``)."""
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default 200)")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="training budget per likelihood (default 20)"
    )
    parser.add_argument(
        "--train-size", type=int, default=None, help="first N training images (default 50000)"
    )
    parser.add_argument(
        "--valid-size", type=int, default=None, help="first N validation images (default 10000)"
    )
    parser.add_argument("--test-size", type=int, default=None, help="first N test images (default 10000)")
    parser.add_argument("--eval-samples", type=int, default=None, help="importance samples (default 1000)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (default 20)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)


def load_data(data_dir: str, args) -> tuple[dict, dict, dict]:
    """Grey-level MNIST for the benchmark: (data, values clamped in valid/test, a counter of
    those clamped in training batches). ``data["train"]`` draws fresh noise for every batch."""
    splits = pyro_vae.data.load_mnist(data_dir, dequantize=True, seed=args.seed)
    pre = splits.preprocessing
    raw_train = splits.raw_train[: args.train_size]
    valid = splits.valid[: args.valid_size]
    test = splits.test[: args.test_size]
    clamped = {"valid": clamp_count(valid), "test": clamp_count(test)}
    clamped_in_training = {"values": 0}

    def fresh_noise(raw_batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        y = pre.forward(raw_batch, generator)
        clamped_in_training["values"] += clamp_count(y)
        return y.clamp_(LOW, HIGH)

    data = {
        "train": TensorBatches(raw_train, fresh_noise, seed=args.seed),
        "valid": valid.clamp(LOW, HIGH),
        "test": test.clamp(LOW, HIGH),
        "log_abs_det_jacobian": pre.log_abs_det_jacobian(784),
    }
    return data, clamped, clamped_in_training


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser)
    parser.add_argument(
        "--likelihoods", default=",".join(LIKELIHOODS), help=f"subset of {','.join(LIKELIHOODS)}"
    )
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    data_dir = _common.require_data_dir(args.data_dir, parser)
    quick = args.quick
    names = _common.choices_list(args.likelihoods, LIKELIHOODS, "likelihoods", parser)
    _common.fill_defaults(args, DEFAULTS)

    threads = _common.setup_threads()
    data, clamped, clamped_in_training = load_data(data_dir, args)
    raw_train, valid, test = data["train"].x, data["valid"], data["test"]
    path = _common.results_path(NAME, quick, args.results_dir)
    result = {
        "benchmark": NAME,
        "command": _common.command_line("likelihoods.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quick": quick,
        "settings": {
            "data": "load_mnist(dequantize=True): (x + u) / 256, fresh noise per training batch",
            "networks": "784-300-300-40 Gaussian encoder, 40-300-300-(params x 784) decoder, N(0, I) prior",
            "train_points": raw_train.shape[0],
            "valid_points": valid.shape[0],
            "test_points": test.shape[0],
            "epochs_max": args.epochs,
            "max_minutes": args.max_minutes,
            "patience": args.patience,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "eval_samples": args.eval_samples,
            "seed": args.seed,
            "torch_threads": threads,
            "log_abs_det_jacobian": data["log_abs_det_jacobian"],
            "clamp": [LOW, HIGH],
            "clamped_values": clamped,
        },
        "likelihoods": {},
    }
    if quick:
        result["note"] = "QUICK smoke run: tiny data and budgets; numbers meaningless"
    for name in names:
        try:
            entry = run_likelihood(name, args, data, log)
        except (pyro_vae.TrainingDiverged, ValueError) as e:
            entry = {"error": f"{type(e).__name__}: {e}"}
            log(f"[{name}] FAILED: {entry['error']}")
        result["likelihoods"][name] = entry
        result["settings"]["clamped_values"]["train_batches_so_far"] = clamped_in_training["values"]
        _common.write_results(NAME, quick, result, args.results_dir)  # after every likelihood
    print_report(result)
    log(f"wrote {path}")
    return result


def print_report(r: dict) -> None:
    s = r["settings"]
    print()
    print(
        f"Grayscale MNIST, (x+u)/256, test bits/dim in 0..255 units ({s['test_points']} test points, "
        f"K={s['eval_samples']}), {r['machine']['processor']}"
    )
    print(
        f"{'likelihood':<22} {'bits/dim':>9} {'+-se':>6} {'ELBO b/d':>9} {'AU':>3} {'epochs':>6} {'train s':>8} {'eval s':>7}"
    )
    for name, e in r["likelihoods"].items():
        if "test" not in e:
            print(f"{name:<22} {e.get('error')}")
            continue
        t, tr = e["test"], e["training"]
        print(
            f"{name:<22} {t['bits_per_dim']:9.3f} {t['bits_per_dim_se']:6.3f} {t['elbo_bits_per_dim']:9.3f} "
            f"{t['active_units']:3d} {tr['epochs_run']:6d} {tr['training_seconds']:8.0f} {e['evaluation_seconds']:7.0f}"
            + ("" if e["valid_density"] else f"  <- {NOT_A_DENSITY}")
        )
    print(f"clamped values (exact 0 or 1 after dequantization): {s['clamped_values']}")
    if r.get("note"):
        print(r["note"])


if __name__ == "__main__":
    main()
