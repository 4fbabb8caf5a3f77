"""pyro_vae: variational autoencoders written as Pyro models, with the loss derived, not hand-written."""

import importlib
import sys

from pyro_vae import data
from pyro_vae.data import tables
from pyro_vae.distributions import guides, likelihoods, priors
from pyro_vae.infer import ais, imputation, synthesis
from pyro_vae.infer.evaluation import evaluate
from pyro_vae.infer.objectives import BetaSchedule, make_elbo
from pyro_vae.infer.selection import Selection, select
from pyro_vae.infer.training import History, TrainConfig, TrainingDiverged, fit
from pyro_vae.model import VAE
from pyro_vae.nn import networks
from pyro_vae.version import __version__

__all__ = [
    "VAE",
    "BetaSchedule",
    "History",
    "Selection",
    "TrainConfig",
    "TrainingDiverged",
    "__version__",
    "ais",
    "data",
    "diagnostics",
    "estimators",
    "evaluate",
    "fit",
    "guides",
    "imputation",
    "likelihoods",
    "make_elbo",
    "networks",
    "priors",
    "select",
    "synthesis",
    "tables",
]


# Modules that moved into the subpackages keep their old names: ``import pyro_vae.ais``,
# ``from pyro_vae.training import fit`` and ``pyro_vae.step`` still work, and give the same
# module objects as their new homes.
_MOVED = {
    "likelihoods": "distributions.likelihoods",
    "priors": "distributions.priors",
    "guides": "distributions.guides",
    "networks": "nn.networks",
    "objectives": "infer.objectives",
    "step": "infer.replayed_elbo",
    "training": "infer.training",
    "evaluation": "infer.evaluation",
    "chunking": "infer.chunking",
    "ais": "infer.ais",
    "imputation": "infer.imputation",
    "selection": "infer.selection",
    "refine": "infer.refine",
    "synthesis": "infer.synthesis",
    "threads": "infer.thread_policy",
    "distributed": "infer.distributed",
    "arrays": "data.arrays",
    "reading": "data.reading",
    "tables": "data.tables",
    "columns": "data.columns",
}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(f"{__name__}.{_new}")
del _old, _new


def __getattr__(name: str):
    # pyro_vae.diagnostics needs ArviZ, which takes seconds to import, and pyro_vae.estimators
    # scikit-learn's estimator machinery: loaded on first use.
    if name in ("diagnostics", "estimators"):
        return importlib.import_module(f"pyro_vae.{name}")
    if name in _MOVED:
        return importlib.import_module(f"pyro_vae.{_MOVED[name]}")
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
