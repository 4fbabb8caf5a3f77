"""Training throughput with 1 and 2 processes (DistributedDataParallel over gloo, CPU).

    python benchmarks/ddp_scaling.py              # binarized MNIST, writes results/ddp_scaling.json
    python benchmarks/ddp_scaling.py --quick      # bundled digits, a few seconds

The MNIST network (784-300-300-40, Bernoulli) trains on ``--train-size`` images for a few
epochs in each configuration; the first epoch is a warm-up. Configurations, interleaved
over ``--repeats`` rounds:

* 1 process, batch 128 (torch uses all cores);
* 2 processes, batch 64 each: the same global batch, so the same optimisation (strong scaling);
* 2 processes, batch 128 each: twice the global batch (weak scaling).

Throughput is training images per second (median over epochs and rounds); speed-up is
against 1 process in the same run. On one machine the processes share its cores
(torch threads = cores / processes), so this measures DDP's overhead more than its gain:
the gain comes from more machines or GPUs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

CONFIGS = [(1, 128), (2, 64), (2, 128)]


def worker(args) -> None:
    """Runs in each process (under torchrun for 2 processes)."""
    import pyro_vae
    from pyro_vae.infer import distributed

    nproc = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    if args.quick:
        x = pyro_vae.data.load_digits().train
        vae = pyro_vae.VAE(64, 8, hidden=(64, 64), likelihood="continuous_bernoulli")
    else:
        x = pyro_vae.data.load_binarized_mnist(args.data_dir).train[: args.train_size]
        vae = pyro_vae.VAE(784, 40, hidden=(300, 300), likelihood="bernoulli")
    history = pyro_vae.fit(
        vae, x, epochs=args.epochs, batch_size=args.batch_size, progress=False, distributed=nproc > 1
    )
    if distributed.current().is_main:
        Path(args.worker_out).write_text(json.dumps({"seconds": history["seconds"], "n": len(x)}))
    distributed.shutdown()


def run_config(nproc: int, batch: int, args, out: Path) -> dict:
    cmd = [str(Path(__file__).resolve()), "--worker", "--worker-out", str(out), "--batch-size", str(batch)]
    cmd += ["--epochs", str(args.epochs), "--train-size", str(args.train_size)]
    cmd += ["--quick"] if args.quick else ["--data-dir", args.data_dir]
    if nproc == 1:
        cmd = [sys.executable, *cmd]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *cmd,
        ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_common_arguments(parser)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.epochs, args.repeats = 2, 1
    else:
        _common.require_data_dir(args.data_dir, parser)

    per_config: dict[str, list[float]] = {f"{n}x{b}": [] for n, b in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for nproc, batch in CONFIGS:
                res = run_config(nproc, batch, args, Path(tmp) / f"{nproc}x{batch}_{r}.json")
                per_config[f"{nproc}x{batch}"] += [res["n"] / s for s in res["seconds"][1:]]
                print(
                    f"round {r + 1}: {nproc} process(es) x batch {batch}: {_common.median(per_config[f'{nproc}x{batch}']):.0f} images/s"
                )
    base = _common.median(per_config["1x128"])
    rows = []
    for nproc, batch in CONFIGS:
        tput = _common.median(per_config[f"{nproc}x{batch}"])
        rows.append(
            {
                "processes": nproc,
                "batch_per_process": batch,
                "global_batch": nproc * batch,
                "images_per_second": round(tput, 1),
                "speedup_vs_1_process": round(tput / base, 3),
                "samples": [round(v, 1) for v in per_config[f"{nproc}x{batch}"]],
            }
        )
    result = {
        "benchmark": "ddp_scaling",
        "quick": args.quick,
        "command": _common.command_line("ddp_scaling.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "dataset": "digits (quick)"
        if args.quick
        else f"binarized_mnist, first {args.train_size} training images",
        "epochs_per_run": args.epochs,
        "warmup_epochs_dropped": 1,
        "rows": rows,
    }
    print(f"{'processes':>9} {'batch/proc':>10} {'images/s':>9} {'speed-up':>8}")
    for row in rows:
        print(
            f"{row['processes']:>9} {row['batch_per_process']:>10} {row['images_per_second']:>9.0f} "
            f"{row['speedup_vs_1_process']:>8.2f}"
        )
    print("wrote", _common.write_results("ddp_scaling", args.quick, result, args.results_dir))
    return result


if __name__ == "__main__":
    main()
