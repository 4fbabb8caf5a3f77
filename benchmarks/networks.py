"""Networks on grey-level MNIST: the built-in ``conv`` against ``mlp`` at the same training
time, per likelihood (test bits/dim); and the epochs/s of ``pyro_vae.fit`` with the conv VAE
against a plain PyTorch loop with the same networks.

Reproduce (from the repository root; long: --max-minutes of training per network and
likelihood plus the evaluations, 2 networks x 4 likelihoods):

    PYRO_VAE_DATA=/path/to/data python benchmarks/networks.py                   # -> results/networks.json
    PYRO_VAE_DATA=/path/to/data python benchmarks/networks.py --device cuda     # on a GPU (speed rows too)
    PYRO_VAE_DATA=/path/to/data python benchmarks/networks.py --quick           # seconds, smoke test

Data and evaluation as in ``benchmarks/likelihoods.py`` (dequantized ``(x + u) / 256``,
fresh noise per batch, bits/dim in raw grey-level units, lower is better). Networks:
``mlp`` is 784-300-300-40 (ReLU), ``conv`` the built-in convolutional pair on (1, 28, 28)
images (two stride-2 convolutions, 32 and 64 channels, a linear map to the 40-dimensional
code; transposed convolutions back). Every (network, likelihood) gets the same training
budget ``--max-minutes`` (the epoch in progress finishes), early stopping on the validation
ELBO, N(0, I) prior, Adam.

Speed (``--speed-images`` images, ``--speed-epochs`` epochs, on ``--device``): the
per-epoch training time of ``pyro_vae.fit`` (Pyro's ELBO through ``vae.model`` and
``vae.guide``) against a plain PyTorch loop over the same encoder, decoder and likelihood
modules (reparameterised draw, closed-form Gaussian KL), batch ``--batch-size``, Adam.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import likelihoods as grey  # noqa: E402

log = _common.log
import torch  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.data import make_loader  # noqa: E402
from pyro_vae.infer.training import make_optimizer  # noqa: E402

NAME = "networks"
NETWORKS = ("mlp", "conv")
LIKELIHOODS = ("beta", "laplace", "gaussian", "continuous_bernoulli")
SPEED_LIKELIHOOD = "beta"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epoch(vae: pyro_vae.VAE, loader, optimizer, device: torch.device) -> float:
    """One epoch of a plain PyTorch VAE loop over ``vae``'s own modules; its seconds."""
    _sync(device)
    start = time.perf_counter()
    for batch in loader:
        x = vae.shaped(batch.to(device, non_blocking=True))
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        log_px_z = vae.likelihood(vae.decoder(z)).log_prob(x).flatten(1).sum(-1)
        kl = 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)
        loss = (kl - log_px_z).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def speed(args, x: torch.Tensor) -> dict:
    """Epochs/s of fit and of the plain loop, same conv networks, data and batch size."""
    device = torch.device(args.device)
    vae = grey.build_vae(SPEED_LIKELIHOOD, "conv")
    history = pyro_vae.fit(
        vae,
        x,
        epochs=args.speed_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        progress=False,
    )
    fit_seconds = history["seconds"][1:] or history["seconds"]  # the first epoch pays one-off start-up costs
    plain = grey.build_vae(SPEED_LIKELIHOOD, "conv").to(device)
    plain.reset_parameters(args.seed)
    optimizer = make_optimizer(plain.parameters(), args.lr)
    loader = make_loader(x, args.batch_size, shuffle=True, seed=args.seed)
    plain_seconds = [plain_epoch(plain, loader, optimizer, device) for _ in range(args.speed_epochs)]
    plain_seconds = plain_seconds[1:] or plain_seconds
    fit_rate, plain_rate = 1 / statistics.median(fit_seconds), 1 / statistics.median(plain_seconds)
    log(
        f"[speed] conv VAE, {len(x)} images, batch {args.batch_size}, {device}: fit {fit_rate:.3f} epochs/s, "
        f"plain PyTorch loop {plain_rate:.3f} epochs/s (fit at {fit_rate / plain_rate:.2f}x)"
    )
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else _common.machine_info()["processor"],
        "likelihood": SPEED_LIKELIHOOD,
        "images": len(x),
        "epochs": args.speed_epochs,
        "batch_size": args.batch_size,
        "fit_epoch_seconds": list(fit_seconds),
        "plain_epoch_seconds": plain_seconds,
        "fit_epochs_per_second": fit_rate,
        "plain_epochs_per_second": plain_rate,
        "fit_relative_to_plain": fit_rate / plain_rate,
        "note": "median epoch time, the first epoch dropped when there are several",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser)
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"subset of {','.join(NETWORKS)}")
    parser.add_argument(
        "--likelihoods", default=",".join(LIKELIHOODS), help=f"subset of {','.join(LIKELIHOODS)}"
    )
    grey.add_training_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (training and the speed rows)")
    parser.add_argument(
        "--speed-images", type=int, default=None, help="images per speed epoch (default 10000)"
    )
    parser.add_argument(
        "--speed-epochs", type=int, default=None, help="epochs timed (default 4, 2 with --quick)"
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the fit vs plain-loop timing")
    args = parser.parse_args(argv)
    data_dir = _common.require_data_dir(args.data_dir, parser)
    quick = args.quick
    networks = _common.choices_list(args.networks, NETWORKS, "networks", parser)
    names = _common.choices_list(args.likelihoods, LIKELIHOODS, "likelihoods", parser)
    _common.fill_defaults(args, {**grey.DEFAULTS, "speed_images": (10000, 200), "speed_epochs": (4, 2)})

    threads = _common.setup_threads()
    data, clamped, clamped_in_training = grey.load_data(data_dir, args)
    path = _common.results_path(NAME, quick, args.results_dir)
    result = {
        "benchmark": NAME,
        "command": _common.command_line("networks.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quick": quick,
        "settings": {
            "data": "load_mnist(dequantize=True): (x + u) / 256, fresh noise per training batch",
            "networks": {
                "mlp": "784-300-300-40 Gaussian encoder, 40-300-300-(params x 784) decoder",
                "conv": "built-in conv: 1-32-64 stride-2 convolutions, linear to 40; transposed back",
            },
            "prior": "standard_normal",
            "train_points": data["train"].x.shape[0],
            "valid_points": data["valid"].shape[0],
            "test_points": data["test"].shape[0],
            "epochs_max": args.epochs,
            "max_minutes": args.max_minutes,
            "patience": args.patience,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "eval_samples": args.eval_samples,
            "seed": args.seed,
            "device": args.device,
            "torch_threads": threads,
            "log_abs_det_jacobian": data["log_abs_det_jacobian"],
            "clamped_values": clamped,
        },
        "runs": {},
    }
    if quick:
        result["note"] = "QUICK smoke run: tiny data and budgets; numbers meaningless"
    for name in names:
        for network in networks:
            try:
                entry = grey.run_likelihood(name, args, data, lambda m, n=network: log(f"[{n}] {m}"), network)
            except (pyro_vae.TrainingDiverged, ValueError) as e:
                entry = {"error": f"{type(e).__name__}: {e}"}
                log(f"[{network}/{name}] FAILED: {entry['error']}")
            result["runs"].setdefault(name, {})[network] = entry
            result["settings"]["clamped_values"]["train_batches_so_far"] = clamped_in_training["values"]
            _common.write_results(NAME, quick, result, args.results_dir)  # after every run
    if not args.no_speed:
        x = data["valid"][: args.speed_images]  # fixed images (no fresh noise): the loops alone are timed
        result["speed"] = speed(args, x)
        _common.write_results(NAME, quick, result, args.results_dir)
    print_report(result)
    log(f"wrote {path}")
    return result


def print_report(r: dict) -> None:
    s = r["settings"]
    print()
    print(
        f"Grey-level MNIST, test bits/dim in 0..255 units ({s['test_points']} test points, K={s['eval_samples']}), "
        f"at most {s['max_minutes']:g} min training each, {r['machine']['processor']}"
    )
    print(
        f"{'likelihood':<22} {'network':<6} {'bits/dim':>9} {'+-se':>6} {'epochs':>6} {'train s':>8} {'params':>9}"
    )
    for name, runs in r["runs"].items():
        for network, e in runs.items():
            if "test" not in e:
                print(f"{name:<22} {network:<6} {e.get('error')}")
                continue
            t, tr = e["test"], e["training"]
            print(
                f"{name:<22} {network:<6} {t['bits_per_dim']:9.3f} {t['bits_per_dim_se']:6.3f} "
                f"{tr['epochs_run']:6d} {tr['training_seconds']:8.0f} {e['parameters']:9d}"
            )
    if "speed" in r:
        sp = r["speed"]
        print(
            f"speed ({sp['device']}): fit {sp['fit_epochs_per_second']:.3f} epochs/s, plain loop "
            f"{sp['plain_epochs_per_second']:.3f} epochs/s, {sp['images']} images per epoch"
        )
    if r.get("note"):
        print(r["note"])


if __name__ == "__main__":
    main()
