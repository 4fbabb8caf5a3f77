"""The README's main job, timed: `pyro-vae train` with no flags (bundled digits, defaults).

    python benchmarks/main_job.py        # writes benchmarks/results/main_job.json

Prints and saves the wall time of the whole job (data, training, evaluation, figures),
the epochs run and the test metrics, with the machine it ran on.
"""

import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from pyro_vae.app.config import RunConfig
from pyro_vae.app.run import train_run
from pyro_vae.io import atomic_write_json
from pyro_vae.utils import available_cpus

RESULTS = Path(__file__).parent / "results" / "main_job.json"


def main() -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        metrics = train_run(RunConfig(), out, progress=False)
        seconds = time.perf_counter() - start
    result = {
        "command": "pyro-vae train",
        "wall_seconds": round(seconds, 1),
        "training_seconds": round(metrics["training"]["seconds"], 1),
        "epochs": metrics["training"]["epochs"],
        "best_epoch": metrics["training"]["best_epoch"],
        "likelihood": metrics["training"]["likelihood"],
        "test_log_likelihood_nats": round(metrics["log_likelihood"], 2),
        "test_elbo_nats": round(metrics["elbo"], 2),
        "test_bits_per_dim": round(metrics["bits_per_dim"], 3),
        "active_units": metrics["active_units"],
        "machine": {
            "cpus": available_cpus(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "ci": bool(os.environ.get("CI")),
        },
        "date": date.today().isoformat(),
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS, result)
    return result


if __name__ == "__main__":
    main()
