"""Helpers shared by the benchmark scripts: machine description, results files, timing.

Not a benchmark itself. Every script writes ``benchmarks/results/NAME.json`` (or
``NAME_quick.json`` with ``--quick``, so a smoke run never overwrites full results) holding
the exact command line, the machine and the date next to its figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pyro_vae.infer.thread_policy import ForeignLoad
from pyro_vae.io import atomic_write_text

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
REPO_ROOT = BENCHMARKS_DIR.parent
DATA_ENV = "PYRO_VAE_DATA"
# every benchmark runs torch with this many threads (the machine has 2 cores); PYRO_VAE_BENCH_THREADS=1
# leaves a core free when a long run shares the machine with other work
THREADS = int(os.environ.get("PYRO_VAE_BENCH_THREADS", "2"))


# --------------------------------------------------------------------------- machine and provenance


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "pyro_vae")
        return {"commit": commit, "pyro_vae_modified_since_commit": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "pyro_vae_modified_since_commit": None}


def machine_info() -> dict[str, Any]:
    import pyro

    import pyro_vae
    from pyro_vae.utils import available_cpus

    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_count": os.cpu_count(),
        "available_cpus": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_vae": pyro_vae.__version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "processor": _processor(),
        "platform": platform.platform(),
        "load_average_1_5_15_min": load,
        "git": _git_state(),
    }


def command_line(script: str, argv: Sequence[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    env = [f"PYRO_VAE_BENCH_THREADS={THREADS}"] if "PYRO_VAE_BENCH_THREADS" in os.environ else []
    return shlex.join([*env, "python", f"benchmarks/{script}", *args])


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- results files


def results_path(name: str, quick: bool, results_dir: str | Path | None = None) -> Path:
    return Path(results_dir or RESULTS_DIR) / f"{name}{'_quick' if quick else ''}.json"


def _clean(value: Any) -> Any:
    """JSON-ready: tensors and numpy scalars to numbers, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _clean(value.tolist())
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_results(
    name: str, quick: bool, result: dict[str, Any], results_dir: str | Path | None = None
) -> Path:
    """Write ``result`` as JSON atomically (so an interrupted run leaves the last good file)."""
    path = results_path(name, quick, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_clean(result), indent=2, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- arguments and data


def add_common_arguments(parser) -> None:
    parser.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_ENV),
        help=f"folder with binarized_mnist.npz and mnist.npz (default: ${DATA_ENV})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a few seconds; writes NAME_quick.json instead of NAME.json",
    )
    parser.add_argument(
        "--results-dir",
        default=None,
        help=f"where NAME.json goes (default {RESULTS_DIR.relative_to(REPO_ROOT)})",
    )


def require_data_dir(data_dir: str | None, parser) -> str:
    if not data_dir:
        parser.error(f"no data directory: pass --data-dir or set {DATA_ENV}")
    return data_dir


def setup_threads() -> int:
    from pyro_vae.utils import set_threads

    return set_threads(THREADS)


# --------------------------------------------------------------------------- statistics and timing


def log(msg: str) -> None:
    """Print at once (benchmarks run long and their output is often redirected)."""
    print(msg, flush=True)


def quick_or_full(value: Any, full: Any, small: Any, quick: bool) -> Any:
    """An option's value: as given, else the ``--quick`` default or the full-run one."""
    return value if value is not None else (small if quick else full)


def fill_defaults(args, defaults: dict[str, tuple[Any, Any]]) -> None:
    """Set each option left unset to its ``(full, quick)`` default, by ``args.quick``."""
    for name, (full, small) in defaults.items():
        setattr(args, name, quick_or_full(getattr(args, name), full, small, args.quick))


def choices_list(text: str, allowed: Sequence[str], what: str, parser) -> list[str]:
    """A comma-separated list of names, each one of ``allowed`` (else a usage error)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return names


def wait_unless_quick(wait_idle: float | None, quick: bool) -> dict[str, Any]:
    """Wait for a quiet machine (up to ``wait_idle`` s; default 300, none with ``--quick``)."""
    return wait_for_quiet(quick_or_full(wait_idle, 300, 0, quick), log=log)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and all values (seconds, or whatever was measured)."""
    return {
        "median": round(median(values), digits + 2),
        "min": round(min(values), digits + 2),
        "max": round(max(values), digits + 2),
        "n": len(values),
        "values": [round(v, digits + 2) for v in values],
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def wait_for_quiet(
    max_wait: float, threshold: float = 0.1, window: float = 2.0, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` of the CPUs.

    Two threads on a 2-core machine where another process keeps one core busy run many
    times slower than alone (each parallel region waits for the preempted thread), so
    timings taken then measure the neighbour, not the code. Returns what was seen.
    """
    start = time.perf_counter()
    seen = None
    if max_wait <= 0:
        window = min(window, 0.5)  # just record the state
    while True:
        load = ForeignLoad()
        with load.measure():
            time.sleep(window)
        seen = load.fraction
        waited = time.perf_counter() - start
        if seen is None or seen < threshold or waited >= max_wait:
            break
        log(f"  waiting for a quiet machine: other processes use {seen:.0%} of the CPUs ({waited:.0f} s)")
    return {"waited_seconds": round(time.perf_counter() - start, 1), "foreign_cpu_fraction_at_start": seen}


def interleave(
    contenders: dict[str, Callable[[], float]],
    repeats: int,
    *,
    warmup: int = 0,
    load: ForeignLoad | None = None,
) -> dict[str, list[float]]:
    """Run ``contenders`` round-robin (A, B, C, B, C, A, ...), the order rotated every round.

    Each callable returns the number it measured (usually seconds). Rotating the order
    keeps slow drifts of a shared machine and "who runs first" effects from favouring one
    contender; ``warmup`` rounds are run and discarded. ``load`` accumulates how busy
    other processes kept the machine during the kept rounds.
    """
    names = list(contenders)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        k = r % len(names)
        keep = r >= warmup
        with load.measure() if (load is not None and keep) else contextlib.nullcontext():
            for name in names[k:] + names[:k]:
                value = contenders[name]()
                if keep:
                    out[name].append(value)
    return out


# --------------------------------------------------------------------------- training under a time budget


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it (results name no clone's location)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


def fit_with_budget(
    vae,
    train,
    valid,
    *,
    epochs: int,
    max_seconds: float | None,
    patience: int | None = None,
    beta: Any = 1.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Train with :func:`pyro_vae.fit` for at most ``epochs`` and about ``max_seconds`` (its ``max_minutes``)."""
    import pyro_vae

    start = time.perf_counter()
    if max_seconds is not None:
        fit_kwargs["max_minutes"] = max_seconds / 60.0
    history = pyro_vae.fit(
        vae, train, valid, epochs=epochs, patience=patience, beta=beta, seed=seed, **fit_kwargs
    )
    records = list(history.records)
    stopped = (
        "early_stopping" if history.stopped_early else ("time_budget" if len(records) < epochs else "epochs")
    )
    return {
        "records": records,
        "epochs_run": len(records),
        "best_epoch": history.best_epoch,
        "stopped_by": stopped,
        "training_seconds": time.perf_counter() - start,
        "budget_mechanism": "fit(max_minutes=...)" if max_seconds is not None else "none",
        "optimizer_restarts": 0,
    }
