"""Can the encoder's q(z|x) be trusted? ArviZ diagnostics of a trained VAE, step by step.

Trains a VAE with a 2-D latent on the bundled digits, then:

1. ``to_inference_data``: draws from q(z|x), decoder draws, log p(x|z), importance weights
   and prior draws as ArviZ ``InferenceData`` (saved to netCDF and read back);
2. ``psis_diagnostic``: Pareto k-hat per test point, i.e. whether the importance-sampled
   log p(x) that ``evaluate`` reports is reliable there;
3. ``nuts_posterior``: the exact posterior p(z|x) of the worst points by NUTS, against q;
4. posterior predictive checks and ``az.summary``.

python examples/arviz_diagnostics.py            # a few minutes on 2 CPU cores
python examples/arviz_diagnostics.py --quick    # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import arviz as az
import numpy as np

import pyro_vae
from pyro_vae import VAE, diagnostics, evaluate, fit
from pyro_vae.io import save_figure


def main(quick: bool = False, out: str | Path | None = None) -> dict:
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="arviz_diagnostics_"))
    out.mkdir(parents=True, exist_ok=True)
    num_points, k = (30, 200) if quick else (200, 1000)
    nuts_settings = (
        dict(num_chains=2, warmup=50, draws=50) if quick else dict(num_chains=2, warmup=500, draws=500)
    )

    splits = pyro_vae.data.load_digits(dequantize=True)
    vae = VAE(splits.num_features, latent_dim=2, hidden=(32,) if quick else (256, 256), likelihood="auto")
    fit(vae, splits.train, splits.valid, epochs=3 if quick else 300, lr=1e-3, patience=30, progress=not quick)
    x, labels = splits.test[:num_points], splits.test_labels[:num_points]

    # 1. The amortized posterior as InferenceData: groups posterior, posterior_predictive,
    #    sample_stats (log_weight, lp, log_px_given_z), observed_data, prior; dims obs,
    #    latent, feature. No log_likelihood group: az.loo would be the harmonic-mean estimator.
    idata = diagnostics.to_inference_data(vae, x, k, labels=labels)
    idata.to_netcdf(str(out / "diagnostics.nc"))
    idata = az.from_netcdf(str(out / "diagnostics.nc"))
    print(az.summary(idata, var_names=["z"], coords={"obs": [0, 1]}, kind="stats"))

    # 2. PSIS: k-hat < 0.5 reliable, 0.5-0.7 usable, > 0.7 the point's log p(x) is not to be trusted.
    psis = diagnostics.psis_diagnostic(vae, x, k, labels=labels)
    metrics = evaluate(vae, x, k)
    summary = psis.summary(worst=3)
    print(
        f"k-hat > 0.7 for {summary['share_khat_above']['0.7']:.0%} of {num_points} test points "
        f"(> 0.5: {summary['share_khat_above']['0.5']:.0%}); worst: "
        + ", ".join(f"#{w['index']} (digit {w['label']}) k={w['khat']}" for w in summary["worst"])
    )
    print(
        f"log p(x): evaluate {metrics['log_likelihood']:.2f}, PSIS {np.mean(psis.log_px):.2f} nats per point"
    )
    save_figure(psis.plot(), out / "khat.png", dpi=110)

    # 3. The exact posterior of the worst point by NUTS, against q(z|x).
    worst = summary["worst"][0]["index"]
    nuts = diagnostics.nuts_posterior(
        vae, x[worst], index=[worst], labels=labels[worst : worst + 1], seed=0, **nuts_settings
    )
    print(nuts.summary())
    print(
        f"point #{worst}: NUTS mean {np.round(nuts.mean[0], 2)}, sd {np.round(nuts.sd[0], 2)}; "
        f"q mean {np.round(nuts.q_loc[0], 2)}, sd {np.round(nuts.q_scale[0], 2)}; "
        f"log p(x) - ELBO = {nuts.amortization_gap[0]:.2f} nats; {nuts.seconds[0]:.1f} s"
    )
    save_figure(nuts.plot(), out / "nuts_overlay.png", dpi=110)

    # 4. Posterior predictive check: inputs beside draws from p(x|z), z ~ q(z|x).
    save_figure(diagnostics.plot_ppc(idata, splits.image_shape), out / "ppc.png", dpi=110)
    print(f"wrote {out}/: diagnostics.nc khat.png nuts_overlay.png ppc.png")
    return {"idata": idata, "psis": psis, "nuts": nuts, "metrics": metrics, "out": out}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    parser.add_argument("--out", type=Path, help="folder for the figures and the netCDF file")
    args = parser.parse_args()
    main(args.quick, args.out)
