"""Speed and memory of importance-sampled log p(x) with pyro_vae.evaluate (binarized MNIST test set).

Reproduce (from the repository root):

    PYRO_VAE_DATA=/path/to/data python benchmarks/eval_speed.py                   # the real thing: 10000
                                                          # points, K = 5000, ~3.4e13 FLOPs -> eval_speed.json
    PYRO_VAE_DATA=/path/to/data python benchmarks/eval_speed.py --num-points 200  # a subset, extrapolated
    PYRO_VAE_DATA=/path/to/data python benchmarks/eval_speed.py --quick           # seconds -> eval_speed_quick.json

The model is ``VAE(784, 40, hidden=(300, 300), likelihood="bernoulli")`` with random weights
(speed does not depend on training; ``--model-dir`` loads a saved one instead). Each
evaluation runs in a child process (``python benchmarks/eval_speed.py --child ...``) so that
its memory can be read alone: the child loads data and model, runs a tiny warm-up, resets
the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs ``pyro_vae.evaluate`` and
reports wall time, resident memory before, and the peak during the evaluation (VmHWM),
i.e. the memory the evaluation itself needed.

FLOPs are counted as matrix-multiply work only: ``2 * sum(in * out)`` over the decoder's
Linear layers per (sample, point) pair, plus the encoder's per point each time it runs
(once per chunk of samples). The achieved rate is compared with the rate of a plain
``torch.mm`` of the decoder's largest shape, ``(chunk_pairs x 300) @ (300 x 784)``, with the
best ``torch.mm`` of that width over a few row counts (the target, achieved >= 60% of it, is
judged against this one: a chunk-sized product pays for allocating its huge output just as
the evaluation does), and with the decoder's three Linear layers alone, all measured in the
same run between the evaluations. A second chunk size (a sixteenth by default) shows that
memory is bounded by the chunk, not by the number of points or samples, and how the time
per pair depends on the chunk. With fewer points
or samples than the full 10000 x 5000, the full run's time is extrapolated linearly in the
number of pairs and labelled as such. Last, one chunk's work (``vae.log_weights`` and the
sums ``evaluate`` keeps) is timed eager and through ``torch.compile`` side by side
(``compiled_chunk``): what fusing the element-wise tail would give; ``evaluate`` runs eager.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

log = _common.log
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

NAME = "eval_speed"
INPUT_DIM, LATENT_DIM, HIDDEN = 784, 40, (300, 300)
FULL_POINTS, FULL_SAMPLES = 10000, 5000
TARGET_FRACTION = 0.60


# --------------------------------------------------------------------------- the child: one evaluation


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_model(model_dir: str | None, seed: int):
    import pyro_vae

    if model_dir:
        return pyro_vae.VAE.load(model_dir)
    torch.manual_seed(seed)
    vae = pyro_vae.VAE(INPUT_DIM, LATENT_DIM, hidden=HIDDEN, likelihood="bernoulli")
    vae.fitted = True
    return vae


def child(spec: dict) -> dict:
    import gc

    import pyro_vae
    from pyro_vae.utils import set_threads

    set_threads(spec["threads"])
    x = pyro_vae.data.load_binarized_mnist(spec["data_dir"]).test[: spec["num_points"]].clone()
    gc.collect()
    vae = build_model(spec.get("model_dir"), spec["seed"])
    pyro_vae.evaluate(vae, x[:1], num_samples=8, chunk_size=8)  # lazy initialisation, tiny memory
    gc.collect()
    baseline_kib = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    metrics = pyro_vae.evaluate(vae, x, num_samples=spec["num_samples"], chunk_size=spec["chunk_size"])
    seconds = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM") if reset else None
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "rss_before_eval_mib": baseline_kib / 1024 if baseline_kib else None,
        "peak_rss_during_eval_mib": peak_kib / 1024 if peak_kib else None,
        "peak_increase_mib": (peak_kib - baseline_kib) / 1024 if peak_kib and baseline_kib else None,
        "process_ru_maxrss_mib": maxrss_kib / 1024,
        "peak_counter_reset": reset,
        "log_likelihood": metrics["log_likelihood"],
        "num_points": metrics["num_points"],
        "torch_threads": torch.get_num_threads(),
    }


def run_child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"evaluation child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# --------------------------------------------------------------------------- FLOPs and the reference rate


def linear_shapes(module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]


def matmul_flops(shapes) -> int:
    return 2 * sum(i * o for i, o in shapes)


def chunk_scan(data_dir: str, seed: int, num_samples: int, chunk: int, points: int = 16) -> dict:
    """Microseconds per (draw, point) at a few chunk sizes around ``chunk`` (two rounds, best)."""
    import pyro_vae
    from pyro_vae.infer.evaluation import chunk_plan

    vae = build_model(None, seed)
    x = pyro_vae.data.load_binarized_mnist(data_dir).test[:points].clone()
    sizes = sorted({max(1, chunk // 4), max(1, chunk // 2), chunk, 2 * chunk})
    pyro_vae.evaluate(vae, x[:2], num_samples=num_samples, chunk_size=chunk)
    best = {}
    for _ in range(2):
        for size in sizes:
            start = time.perf_counter()
            pyro_vae.evaluate(vae, x, num_samples=num_samples, chunk_size=size)
            us = 1e6 * (time.perf_counter() - start) / (points * num_samples)
            best[size] = min(best.get(size, math.inf), us)
    return {
        str(size): {"draws_per_chunk": chunk_plan(num_samples, size)[0], "microseconds_per_pair": us}
        for size, us in best.items()
    }


def count_flops(decoder_shapes, encoder_shapes, num_points: int, num_samples: int, chunk_size: int) -> dict:
    from pyro_vae.infer.evaluation import chunk_plan

    k_chunk, _ = chunk_plan(num_samples, chunk_size)  # as evaluate splits the draws
    encoder_runs = math.ceil(num_samples / k_chunk)
    decoder = matmul_flops(decoder_shapes) * num_points * num_samples
    encoder = matmul_flops(encoder_shapes) * num_points * encoder_runs
    return {"decoder": decoder, "encoder": encoder, "total": decoder + encoder}


def reference_rates(rows: int, decoder_shapes, repeats: int, other_rows=(4096, 1024)) -> dict:
    """GFLOP/s of torch.mm (rows x 300) @ (300 x 784) and of the decoder's Linear layers alone.

    Also torch.mm with ``other_rows`` rows: the best of these is the machine's matmul rate
    without the cost of allocating a huge output (which a chunk-sized product pays too).
    """
    torch.manual_seed(0)
    (i0, _), *_ = decoder_shapes
    hidden, out = decoder_shapes[-1]
    b = torch.randn(hidden, out)
    z = torch.randn(rows, i0)
    weights = [(torch.randn(o, i) / math.sqrt(i), torch.zeros(o)) for i, o in decoder_shapes]
    inputs = {r: torch.randn(r, hidden) for r in (rows, *other_rows)}

    def mm(a):
        def run():
            start = time.perf_counter()
            torch.mm(a, b)
            return time.perf_counter() - start

        return run

    def linears():
        start = time.perf_counter()
        h = z
        for w, bias in weights:
            h = F.linear(h, w, bias)
        return time.perf_counter() - start

    contenders = {f"mm_{r}": mm(a) for r, a in inputs.items()}
    contenders["linears"] = linears
    with torch.no_grad():
        t = _common.interleave(contenders, repeats, warmup=2)
    mm_rates = {r: 2 * r * hidden * out / _common.median(t[f"mm_{r}"]) / 1e9 for r in inputs}
    return {
        "torch_mm_gflops": mm_rates[rows],
        "torch_mm_gflops_by_rows": {str(r): v for r, v in mm_rates.items()},
        "best_torch_mm_gflops": max(mm_rates.values()),
        "decoder_linears_gflops": matmul_flops(decoder_shapes) * rows / _common.median(t["linears"]) / 1e9,
    }


def _chunk_terms(vae, x: torch.Tensor, draws: int) -> tuple[torch.Tensor, ...]:
    """One chunk's work as ``evaluate`` does it: the log weights of ``draws`` posterior
    draws per point (``vae.log_weights``), their log-sum-exp and the ELBO's sums."""
    w = vae.log_weights(x, draws)
    return torch.logsumexp(w.log_w, 0), w.log_px_z.sum(0), (w.log_q - w.log_pz).sum(0)


def compiled_chunk(data_dir: str, seed: int, num_samples: int, chunk: int, rounds: int) -> dict:
    """Microseconds per (draw, point) of one evaluation chunk, eager and through torch.compile.

    The same function of the same draws (``vae.log_weights`` and the sums ``evaluate`` keeps),
    chunks as ``evaluate`` splits them, interleaved; the compiled one fuses the element-wise
    tail (log-sigmoid, bias adds, the sums) into the products' loops. ``evaluate`` itself runs
    the eager one: this is what a compiled tail would give it.
    """
    import pyro_vae
    from pyro_vae.infer.evaluation import chunk_plan
    from pyro_vae.infer.replayed_elbo import compiler_problem

    problem = compiler_problem(torch.device("cpu"))
    if problem is not None:
        return {"skipped": problem}
    draws, points = chunk_plan(num_samples, chunk)
    vae = build_model(None, seed).eval()
    x = pyro_vae.data.load_binarized_mnist(data_dir).test[:points].clone()
    compiled = torch.compile(_chunk_terms, dynamic=False)
    with torch.no_grad():
        start = time.perf_counter()
        compiled(vae, x, draws)
        compile_seconds = time.perf_counter() - start

        def timed(fn):
            def run():
                begin = time.perf_counter()
                fn(vae, x, draws)
                return time.perf_counter() - begin

            return run

        t = _common.interleave({"eager": timed(_chunk_terms), "compiled": timed(compiled)}, rounds, warmup=3)
    us = {k: 1e6 * _common.median(v) / (draws * points) for k, v in t.items()}
    return {
        "draws_per_chunk": draws,
        "points_per_chunk": points,
        "eager_microseconds_per_pair": us["eager"],
        "compiled_microseconds_per_pair": us["compiled"],
        "eager_over_compiled": us["eager"] / us["compiled"],
        "compile_seconds": compile_seconds,
    }


def bernoulli_log_prob_ms(draws: int, input_dim: int, repeats: int) -> dict:
    """Milliseconds of the Bernoulli log-probability of one point against ``draws`` logits.

    torch's ``Bernoulli.log_prob`` (its ``binary_cross_entropy_with_logits`` kernel) against
    the ``likelihoods.BinaryLogits`` that pyro_vae's Bernoulli likelihood returns for binary
    data (one log-sigmoid) and the ``x l - softplus(l)`` form it uses for grey levels
    (``strict=False``), all without autograd and with the event dimension summed, as in
    ``evaluate``.
    """
    import torch.distributions as td

    from pyro_vae.distributions.likelihoods import BernoulliLogits, BinaryLogits

    torch.manual_seed(0)
    logits = 3 * torch.randn(draws, 1, input_dim)
    x = (torch.rand(1, input_dim) < 0.3).float()

    def timed(d):
        def run():
            start = time.perf_counter()
            d.log_prob(x).sum(-1)
            return time.perf_counter() - start

        return run

    contenders = {
        "torch_bernoulli": timed(td.Bernoulli(logits=logits, validate_args=False)),
        "pyro_vae_bernoulli_logits": timed(BinaryLogits(logits=logits, validate_args=False)),
        "pyro_vae_softplus_form": timed(BernoulliLogits(logits=logits, validate_args=False)),
    }
    with torch.no_grad():
        t = _common.interleave(contenders, repeats, warmup=2)
    ms = {k: 1e3 * _common.median(v) for k, v in t.items()}
    return {
        "shape": [draws, 1, input_dim],
        "milliseconds": ms,
        "torch_over_pyro_vae": ms["torch_bernoulli"] / ms["pyro_vae_bernoulli_logits"],
        "softplus_form_over_log_sigmoid": ms["pyro_vae_softplus_form"] / ms["pyro_vae_bernoulli_logits"],
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser)
    parser.add_argument("--num-points", type=int, default=None, help="test points (default all 10000)")
    parser.add_argument("--num-samples", type=int, default=None, help="importance samples K (default 5000)")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="(sample, point) pairs per chunk (default: pyro_vae's)"
    )
    parser.add_argument(
        "--small-chunk-size", type=int, default=None, help="the second chunk size (default: a sixteenth)"
    )
    parser.add_argument(
        "--memory-points",
        type=int,
        default=None,
        help="points for the small-chunk run, which shows memory (default: min(num points, 200))",
    )
    parser.add_argument("--repeats", type=int, default=1, help="evaluations at the main chunk size (median)")
    parser.add_argument("--model-dir", default=None, help="a directory written by VAE.save (default: random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-idle", type=float, default=None, help="see speed.py (default 300, --quick 0)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return {}
    data_dir = _common.require_data_dir(args.data_dir, parser)
    quick = args.quick
    num_points = args.num_points or (20 if quick else FULL_POINTS)
    num_samples = args.num_samples or (50 if quick else FULL_SAMPLES)

    threads = _common.setup_threads()
    quiet = _common.wait_unless_quick(args.wait_idle, quick)
    started = time.perf_counter()
    from pyro_vae.infer.evaluation import default_chunk_size

    vae = build_model(args.model_dir, args.seed)
    chunk = args.chunk_size or (200 if quick else default_chunk_size(vae))
    small_chunk = args.small_chunk_size or max(1, chunk // 16)
    memory_points = args.memory_points or min(num_points, 200)
    dec_shapes, enc_shapes = linear_shapes(vae.decoder), linear_shapes(vae.encoder)
    spec = {
        "data_dir": data_dir,
        "num_points": num_points,
        "num_samples": num_samples,
        "chunk_size": chunk,
        "model_dir": args.model_dir,
        "seed": args.seed,
        "threads": threads,
    }
    subset = num_points * num_samples < FULL_POINTS * FULL_SAMPLES
    result = {
        "benchmark": NAME,
        "command": _common.command_line("eval_speed.py", argv),
        "date": _common.now(),
        "machine": _common.machine_info(),
        "quiet_machine_check": quiet,
        "quick": quick,
        "settings": {
            "model": args.model_dir
            or "VAE(784, 40, hidden=(300, 300), likelihood='bernoulli'), random weights",
            "num_points": num_points,
            "num_samples": num_samples,
            "subset_of_full_run": subset,
            "chunk_size": chunk,
            "small_chunk_size": small_chunk,
            "memory_points": memory_points,
            "repeats": args.repeats,
            "torch_threads": threads,
            "flop_counting": "matmul only: 2*sum(in*out) of the decoder's Linear layers per (sample, point) "
            "pair + the encoder's per point per chunk of samples",
            "memory": "child process: VmHWM after resetting it (clear_refs) minus VmRSS just before evaluate",
        },
        "decoder_linear_shapes": dec_shapes,
        "encoder_linear_shapes": enc_shapes,
    }
    rows = chunk  # the decoder's input is (k_chunk, n_chunk, latent) = about `chunk` rows
    ref_repeats = 3 if quick else 10
    log(
        f"eval_speed: {num_points} points x K={num_samples}, chunk {chunk} pairs"
        + (" (a SUBSET of the full 10000 x 5000)" if subset else " (the full run)")
    )
    rates, runs = [], []
    rates.append(reference_rates(rows, dec_shapes, ref_repeats))
    load = _common.ForeignLoad()
    for r in range(args.repeats):
        log(f"  evaluation {r + 1}/{args.repeats} at chunk {chunk} ...")
        with load.measure():
            runs.append(run_child(spec))
        log(f"    {runs[-1]['seconds']:.2f} s, peak +{runs[-1]['peak_increase_mib']} MiB")
        rates.append(reference_rates(rows, dec_shapes, ref_repeats))
    log("  chunk sizes around the default (16 points each) ...")
    with load.measure():
        result["chunk_scan"] = chunk_scan(data_dir, args.seed, num_samples, chunk)
    log(
        "    "
        + ", ".join(f"{c}: {v['microseconds_per_pair']:.2f} us" for c, v in result["chunk_scan"].items())
    )
    small_spec = dict(spec, chunk_size=small_chunk, num_points=min(memory_points, num_points))
    log(f"  evaluation of {small_spec['num_points']} points at chunk {small_chunk} (memory check) ...")
    with load.measure():
        small = run_child(small_spec)
    log(f"    {small['seconds']:.2f} s, peak +{small['peak_increase_mib']} MiB")
    rates.append(reference_rates(rows, dec_shapes, ref_repeats))

    seconds = _common.median([run["seconds"] for run in runs])
    flops = count_flops(dec_shapes, enc_shapes, num_points, num_samples, chunk)
    achieved = flops["total"] / seconds / 1e9
    mm_rate = _common.median([r["torch_mm_gflops"] for r in rates])
    best_rate = _common.median([r["best_torch_mm_gflops"] for r in rates])
    linears_rate = _common.median([r["decoder_linears_gflops"] for r in rates])
    small_flops = count_flops(dec_shapes, enc_shapes, small_spec["num_points"], num_samples, small_chunk)
    pairs = num_points * num_samples
    result["evaluation"] = {
        "seconds": _common.summary([run["seconds"] for run in runs]),
        "pairs": pairs,
        "microseconds_per_pair": 1e6 * seconds / pairs,
        "flops": flops,
        "achieved_gflops": achieved,
        "log_likelihood": runs[0]["log_likelihood"],
        "foreign_cpu_fraction": load.fraction,
        "runs": runs,
    }
    result["reference"] = {
        "torch_mm_gflops": mm_rate,
        "best_torch_mm_gflops": best_rate,
        "decoder_linears_gflops": linears_rate,
        "shape": f"({rows} x {dec_shapes[-1][0]}) @ ({dec_shapes[-1][0]} x {dec_shapes[-1][1]})",
        "measurements": rates,
    }
    fraction = achieved / best_rate
    result["efficiency"] = {
        "achieved_over_best_torch_mm": fraction,
        "achieved_over_chunk_shaped_torch_mm": achieved / mm_rate,
        "achieved_over_decoder_linears": achieved / linears_rate,
        "target": TARGET_FRACTION,
        "judged_against": "best_torch_mm_gflops (the chunk-shaped product pays for allocating its huge "
        "output, as evaluate does, which would flatter the ratio)",
        "met": fraction >= TARGET_FRACTION,
    }
    result["full_run"] = {
        "points": FULL_POINTS,
        "samples": FULL_SAMPLES,
        "flops": count_flops(dec_shapes, enc_shapes, FULL_POINTS, FULL_SAMPLES, chunk)["total"],
        "seconds": seconds * FULL_POINTS * FULL_SAMPLES / pairs,
        "seconds_kind": "EXTRAPOLATED from the subset (linear in pairs)" if subset else "measured",
    }
    result["memory_by_chunk_size"] = {
        str(chunk): {
            "points": num_points,
            "peak_increase_mib": _common.median([run["peak_increase_mib"] for run in runs]),
            "peak_increase_mib_all_runs": [run["peak_increase_mib"] for run in runs],
            "microseconds_per_pair": 1e6 * seconds / pairs,
        },
        str(small_chunk): {
            "points": small_spec["num_points"],
            "peak_increase_mib": small["peak_increase_mib"],
            "microseconds_per_pair": 1e6 * small["seconds"] / (small_spec["num_points"] * num_samples),
            "achieved_gflops": small_flops["total"] / small["seconds"] / 1e9,
        },
        "decoder_output_mib_per_chunk": {
            str(c): c * dec_shapes[-1][1] * 4 / 2**20 for c in (chunk, small_chunk)
        },
    }
    result["bernoulli_log_prob"] = bernoulli_log_prob_ms(chunk, INPUT_DIM, ref_repeats)
    log("  one chunk, eager and compiled (torch.compile) ...")
    result["compiled_chunk"] = compiled_chunk(data_dir, args.seed, num_samples, chunk, 10 if quick else 60)
    cc = result["compiled_chunk"]
    if "skipped" not in cc:
        # both rates from the same FLOP count per pair as the whole evaluation's
        per_pair = flops["total"] / pairs
        for kind in ("eager", "compiled"):
            rate = per_pair / (cc[f"{kind}_microseconds_per_pair"] * 1e-6) / 1e9
            cc[f"{kind}_gflops"] = rate
            cc[f"{kind}_over_best_torch_mm"] = rate / best_rate
        cc["target_met_compiled"] = cc["compiled_over_best_torch_mm"] >= TARGET_FRACTION
    result["wall_seconds"] = time.perf_counter() - started
    path = _common.write_results(NAME, quick, result, args.results_dir)
    print_report(result)
    log(f"wrote {path}")
    return result


def print_report(r: dict) -> None:
    s, e, ref, eff, full = r["settings"], r["evaluation"], r["reference"], r["efficiency"], r["full_run"]
    print()
    print(
        f"pyro_vae.evaluate, binarized MNIST test, {s['num_points']} points x K={s['num_samples']} "
        f"({'SUBSET' if s['subset_of_full_run'] else 'full run'}), chunk {s['chunk_size']} pairs, "
        f"{s['torch_threads']} threads, {r['machine']['processor']}"
    )
    print(
        f"  time {e['seconds']['median']:.2f} s (median of {e['seconds']['n']}), "
        f"{e['microseconds_per_pair']:.3f} us per (sample, point) pair; log p(x) {e['log_likelihood']:.2f} nats"
    )
    if e.get("foreign_cpu_fraction") and e["foreign_cpu_fraction"] > 0.1:
        print(f"  WARNING: other processes used {e['foreign_cpu_fraction']:.0%} of the CPUs during the runs")
    print(f"  matmul FLOPs {e['flops']['total']:.3e} -> {e['achieved_gflops']:.1f} GFLOP/s achieved")
    by_rows = ", ".join(
        f"{r} rows {v:.0f}" for r, v in ref["measurements"][0]["torch_mm_gflops_by_rows"].items()
    )
    print(
        f"  reference in the same run: torch.mm {ref['shape']} {ref['torch_mm_gflops']:.1f} GFLOP/s, best "
        f"torch.mm {ref['best_torch_mm_gflops']:.1f} GFLOP/s ({by_rows}), decoder Linear layers alone "
        f"{ref['decoder_linears_gflops']:.1f} GFLOP/s"
    )
    print(
        f"  efficiency {eff['achieved_over_best_torch_mm']:.1%} of the best torch.mm "
        f"({eff['achieved_over_chunk_shaped_torch_mm']:.1%} of the chunk-shaped one, "
        f"{eff['achieved_over_decoder_linears']:.1%} of the Linear layers); target >= "
        f"{eff['target']:.0%}: {'met' if eff['met'] else 'MISSED'}"
    )
    print(
        f"  full 10000 x 5000 run ({full['flops']:.2e} FLOPs): {full['seconds']:.0f} s, {full['seconds_kind']}"
    )
    if "chunk_scan" in r:
        scan = ", ".join(
            f"{c} pairs ({v['draws_per_chunk']} draws) {v['microseconds_per_pair']:.2f} us"
            for c, v in r["chunk_scan"].items()
        )
        print(f"  per (sample, point) pair by chunk size, 16 points: {scan}")
    print("  memory (child process, peak RSS increase during evaluate):")
    for c, m in r["memory_by_chunk_size"].items():
        if c.isdigit():
            runs = m.get("peak_increase_mib_all_runs")
            spread = f" (runs: {', '.join(f'{v:.0f}' for v in runs)})" if runs and len(runs) > 1 else ""
            print(
                f"    chunk {c:>7} pairs: +{m['peak_increase_mib']:.0f} MiB{spread} on {m['points']} points, "
                f"{m['microseconds_per_pair']:.3f} us/pair"
            )
    b = r["bernoulli_log_prob"]
    print(
        f"  Bernoulli log_prob of one point against {b['shape'][0]} draws: torch "
        f"{b['milliseconds']['torch_bernoulli']:.2f} ms, pyro_vae BinaryLogits "
        f"{b['milliseconds']['pyro_vae_bernoulli_logits']:.2f} ms ({b['torch_over_pyro_vae']:.1f}x)"
    )
    cc = r.get("compiled_chunk", {})
    if "compiled_over_best_torch_mm" in cc:
        print(
            f"  one chunk ({cc['draws_per_chunk']} draws x {cc['points_per_chunk']} points): eager "
            f"{cc['eager_microseconds_per_pair']:.2f} us/pair ({cc['eager_over_best_torch_mm']:.0%} of the best "
            f"torch.mm), compiled {cc['compiled_microseconds_per_pair']:.2f} us/pair "
            f"({cc['compiled_over_best_torch_mm']:.0%}; compiling {cc['compile_seconds']:.0f} s); evaluate runs eager"
        )
    elif cc:
        print(f"  compiled chunk: {cc['skipped']}")
    print(f"  wall {r['wall_seconds']:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
