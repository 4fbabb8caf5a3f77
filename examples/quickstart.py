"""The Python API in one page: load data, build a VAE, train it with SVI, evaluate, save, load.

python examples/quickstart.py            # about a minute on 2 CPU cores
python examples/quickstart.py --epochs 5 # a smoke run
"""

import argparse
import tempfile

import pyro_vae
from pyro_vae import VAE, evaluate, fit


def main(epochs: int = 200) -> dict:
    # 8x8 digits, grey levels 0..16 dequantized to (x + u) / 17 in (0, 1).
    splits = pyro_vae.data.load_digits(dequantize=True)
    print(splits.summary())

    # "auto" picks the likelihood from the data's support: here continuous_bernoulli.
    vae = VAE(splits.num_features, latent_dim=8, hidden=(256, 256), likelihood="auto", prior="vamp")
    history = fit(vae, splits.train, splits.valid, epochs=epochs, lr=1e-3, patience=30, progress=True)
    print(f"likelihood: {history.likelihood}; best epoch {history.best_epoch} of {len(history)}")

    # Densities in raw grey-level units: add the dequantization's log-Jacobian.
    jacobian = splits.preprocessing.log_abs_det_jacobian(splits.num_features)
    metrics = evaluate(vae, splits.test, num_samples=500, log_abs_det_jacobian=jacobian)
    print(
        f"test log p(x) {metrics['log_likelihood']:.2f} nats, ELBO {metrics['elbo']:.2f}, "
        f"KL {metrics['kl']:.2f}, {metrics['bits_per_dim']:.3f} bits/dim, "
        f"active units {metrics['active_units']}/{vae.latent_dim}"
    )

    with tempfile.TemporaryDirectory() as directory:
        vae.save(directory)
        again = VAE.load(directory)
        assert again.config() == vae.config()
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=200)
    main(parser.parse_args().epochs)
