r"""Can this amortized posterior be trusted? ArviZ diagnostics for a trained VAE.

* :func:`to_inference_data`: draws from the encoder's :math:`q(z \mid x)`, decoder draws,
  :math:`\log p(x \mid z)`, the importance weights and prior draws as ``az.InferenceData``;
* :func:`psis_diagnostic`: per point the Pareto :math:`\hat k` of the importance weights
  (Yao et al. 2018) and the PSIS-smoothed :math:`\log p(x)`: whether the log-likelihood
  :func:`pyro_vae.evaluate` reports can be trusted, point by point;
* :func:`nuts_posterior`: the exact :math:`p(z \mid x_i)` of single points by NUTS, beside q;
* :func:`plot_ppc`, :func:`plot_khat`, :func:`plot_nuts_overlay`: the figures;
* :func:`pyro_vae.app.diagnose.diagnose_run`: all of it for a run directory (``pyro-vae diagnose``).

See ``docs/diagnostics.md``.
"""

from pyro_vae.diagnostics.amortized import (
    KHAT_THRESHOLDS,
    PsisResult,
    psis_diagnostic,
    psis_from_inference_data,
    to_inference_data,
)
from pyro_vae.diagnostics.nuts import NutsResult, nuts_posterior
from pyro_vae.diagnostics.plots import plot_khat, plot_nuts_overlay, plot_ppc

__all__ = [
    "KHAT_THRESHOLDS",
    "NutsResult",
    "PsisResult",
    "nuts_posterior",
    "plot_khat",
    "plot_nuts_overlay",
    "plot_ppc",
    "psis_diagnostic",
    "psis_from_inference_data",
    "to_inference_data",
]
