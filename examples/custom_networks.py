"""Bring your own networks: your own convolutional encoder and decoder, with this library's
Laplace likelihood, training, evaluation and persistence, on grey-level images that stay
images, shape (1, 28, 28).

python examples/custom_networks.py --data-dir DIR   # grey-level MNIST (DIR/mnist.npz), dequantized;
                                                     # about a minute per epoch on one CPU core
python examples/custom_networks.py --quick          # seconds: 8x8 digits enlarged to 28x28, into a
                                                     # fresh temporary folder (or --out DIR)

The contract: the encoder maps a batch (B, 1, 28, 28) to (B, 2 * latent_dim), location and
unconstrained scale (or to a pair (loc, scale)); the decoder maps (B, latent_dim) to
(B, num_params, 1, 28, 28), num_params being the likelihood's. The VAE checks both with one
forward pass when it is built.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import pyro_vae
from pyro_vae import VAE, evaluate, fit
from pyro_vae.app import plotting
from pyro_vae.io import save_figure

SHAPE = (1, 28, 28)


class Encoder(nn.Module):
    """(B, 1, 28, 28) -> (B, 2 * latent_dim): two stride-2 convolutions and a linear layer."""

    def __init__(self, latent_dim: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),  # 28 -> 14
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),  # 14 -> 7
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, latent_dim) -> (B, num_params, 1, 28, 28): a linear layer and two transposed convolutions."""

    def __init__(self, latent_dim: int, num_params: int, width: int = 32) -> None:
        super().__init__()
        self.num_params = num_params
        self.fc = nn.Linear(latent_dim, 2 * width * 7 * 7)
        self.net = nn.Sequential(
            nn.SiLU(),
            nn.Unflatten(1, (2 * width, 7, 7)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),  # 7 -> 14
            nn.SiLU(),
            nn.ConvTranspose2d(width, num_params, 4, 2, 1),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z)).unsqueeze(2)  # (B, num_params, 1, 28, 28)


def load_images(quick: bool, data_dir: str | None) -> tuple[dict[str, torch.Tensor], float, str]:
    """Train, valid and test images (n, 1, 28, 28) in (0, 1), the log-Jacobian to raw grey levels, a name."""
    if not quick:
        splits = pyro_vae.data.load_mnist(data_dir, dequantize=True, images=True)
        parts = {name: splits.split(name)[0] for name in ("train", "valid", "test")}
        return parts, splits.log_abs_det_jacobian, "grey-level MNIST, dequantized"
    # A smoke run needs no files: the bundled 8x8 digits, enlarged. Their densities are not
    # those of any raw data (the enlargement has no Jacobian): the numbers only show it runs.
    digits = pyro_vae.data.load_digits(dequantize=True).as_images()
    parts = {}
    for name, n in (("train", 64), ("valid", 16), ("test", 32)):
        small = digits.split(name)[0][:n]
        parts[name] = F.interpolate(small, size=SHAPE[1:], mode="bilinear", align_corners=False)
    return parts, 0.0, "8x8 digits enlarged to 28x28 (smoke run)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds, tiny data; numbers meaningless")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the model and figures (default: a fresh temporary folder)",
    )
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (default $PYRO_VAE_DATA)")
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (2 with --quick)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--eval-samples", type=int, default=None, help="default 1000 (20 with --quick)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 30)
    num_samples = args.eval_samples or (20 if args.quick else 1000)
    out = args.out or Path(
        tempfile.mkdtemp(prefix="custom_networks_quick_" if args.quick else "custom_networks_")
    )
    out.mkdir(parents=True, exist_ok=True)

    data, jacobian, name = load_images(args.quick, args.data_dir)
    print(f"data    {name}: train {tuple(data['train'].shape)}, test {tuple(data['test'].shape)}")

    # num_params is the likelihood's, readable before the VAE exists: Laplace has a location and a scale.
    num_params = pyro_vae.distributions.likelihoods.create("laplace").num_params
    latent = args.latent_dim
    vae = VAE(
        SHAPE, latent, encoder=Encoder(latent), decoder=Decoder(latent, num_params), likelihood="laplace"
    )
    history = fit(
        vae,
        data["train"],
        data["valid"],
        epochs=epochs,
        batch_size=32 if args.quick else 128,
        lr=1e-3,
        patience=10,
        progress=not args.quick,
    )
    metrics = evaluate(vae, data["test"], num_samples=num_samples, log_abs_det_jacobian=jacobian)
    print(
        f"train   {len(history)} epochs in {history.seconds:.1f} s; test log p(x) {metrics['log_likelihood']:.2f} "
        f"nats, ELBO {metrics['elbo']:.2f}, {metrics['bits_per_dim']:.3f} bits/dim"
    )

    # A custom network saves its weights and config; loading needs the modules again.
    vae.save(out / "model")
    again = VAE.load(out / "model", encoder=Encoder(latent), decoder=Decoder(latent, num_params))
    reloaded = evaluate(again, data["test"], num_samples=num_samples, log_abs_det_jacobian=jacobian)

    with torch.no_grad():
        x = data["test"][:16]
        save_figure(
            plotting.plot_reconstructions(x, vae.reconstruct(x), SHAPE[1:]), out / "reconstructions.png"
        )
        save_figure(plotting.plot_samples(vae.sample(36, mean=True), SHAPE[1:]), out / "samples.png")
    print(f"wrote   {out}/: model/config.json model/model.pt reconstructions.png samples.png")
    return {"metrics": metrics, "reloaded": reloaded, "out": out, "history": history}


if __name__ == "__main__":
    main()
