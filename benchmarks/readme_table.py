"""The README's benchmark table, rendered from the committed results in ``benchmarks/results``.

    python benchmarks/readme_table.py                  # print the table
    python benchmarks/readme_table.py --write README.md  # replace the table in the README
    python benchmarks/readme_table.py --check README.md  # exit 1 if the README's table is stale

The table sits between the ``<!-- benchmarks:begin -->`` and ``<!-- benchmarks:end -->``
markers. Every cell comes from a results file, so a number in the README cannot drift from
the run that produced it; the test suite runs ``--check``. Rows whose results file is
missing are left out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
HEADER = ["what", "result", "machine, date", "command"]


def _load(results_dir: Path, name: str) -> dict | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


FILE_THREADS = object()  # a single-run file: its top-level count is the run's


def _machine(machine: dict, threads: int | None | object = FILE_THREADS) -> str:
    """``threads``: an entry's own count, None when the entry kept none."""
    cpus = machine.get("cpu_count") or machine.get("cpus")
    processor = machine.get("processor", "")
    processor = "Intel Xeon" if "Xeon" in processor else processor
    threads = machine.get("torch_threads") if threads is FILE_THREADS else threads
    counted = "threads not recorded" if threads is None else f"{threads} thread{'s' if threads != 1 else ''}"
    return f"{cpus}-core {processor}, torch {machine.get('torch')}, {counted}"


def _when(machine: dict, date: str, threads: int | None | object = FILE_THREADS) -> str:
    return f"{_machine(machine, threads)}; {date[:10]}"


def _code(command: str) -> str:
    return f"`{command}`"


def _verdict(met: bool | None, target: str) -> str:
    return f"target {target}: {'met' if met else 'missed'}"


def speed_rows(r: dict) -> list[list[str]]:
    e = r["per_epoch"]["128"]
    s = e["per_50000_image_epoch_seconds"]
    t = r["target"]
    pythae = ""
    if "pythae" in s:
        faster = [
            b
            for b, x in r["per_epoch"].items()
            if x["pyro_vae_fit_seconds"]["median"] < x["pythae_seconds"]["median"]
        ]
        pythae = (
            f"; pythae {r['pythae']} {s['pythae']:.2f} s (fit faster at batch {', '.join(faster) or 'none'})"
        )
    default = ""
    if "plain_default_adam" in s:
        default = (
            f"; plain loop with torch's default Adam {s['plain_default_adam']:.2f} s "
            f"(fit/that {e['ratio_pyro_vae_over_plain_default_adam']:.2f}x)"
        )
    result = (
        f"fit {s['pyro_vae']:.2f} s, plain loop (same optimizer) {s['plain']:.2f} s per 50000 images: "
        f"**{t['ratio_pyro_vae_over_plain']:.2f}x** ({_verdict(t['met'], '<= 1.10x')}){default}{pythae}"
    )
    what = "training speed, binarized MNIST, 784-300-300-40 Bernoulli VAE, batch 128: `fit` vs a hand-written PyTorch loop (BCE + analytic KL)"
    return [[what, result, _when(r["machine"], r["date"]), _code(r["command"])]]


def eval_speed_rows(r: dict) -> list[list[str]]:
    ev, eff, full = r["evaluation"], r["efficiency"], r["full_run"]
    chunks = r["memory_by_chunk_size"]
    memory = "; ".join(
        f"+{c['peak_increase_mib']:.0f} MiB peak at chunk {size} on {c['points']} points"
        for size, c in chunks.items()
        if isinstance(c, dict) and "peak_increase_mib" in c
    )
    kind = "extrapolated" if "EXTRAPOLATED" in full["seconds_kind"] else "measured"
    result = (
        f"{ev['microseconds_per_pair']:.2f} µs per (sample, point) pair, **{100 * eff['achieved_over_best_torch_mm']:.0f}%** "
        f"of the `torch.mm` rate ({_verdict(eff['achieved_over_best_torch_mm'] >= eff['target'], '60%')}); "
        f"{full['seconds']:.0f} s for all 10000 test images ({kind}); memory {memory}"
    )
    if "bernoulli_log_prob" in r:
        b = r["bernoulli_log_prob"]
        result += (
            f"; torch's Bernoulli log-prob of one point against {b['shape'][0]} draws takes "
            f"{b['torch_over_pyro_vae']:.1f}x as long as pyro_vae's"
        )
    what = "importance-sampled log p(x), K = 5000, same network"
    return [[what, result, _when(r["machine"], r["date"]), _code(r["command"])]]


MNIST_WHAT = {
    "standard": "static binarized MNIST, standard prior (784-300-300-40, Bernoulli, KL warm-up, early stopping), test NLL with K = 5000",
    "mixture": "the same, mixture prior (500 learned components)",
    "vamp": "the same, VampPrior (500 learned pseudo-inputs)",
    "iwae": '`loss="iwae"`, K = 50, standard prior, no warm-up',
    "gated": '`network="gated"` (GatedDense 784-300-300-40, Tomczak & Welling), standard prior, same protocol',
    "gated_vamp": '`network="gated"`, VampPrior (500 learned pseudo-inputs), same protocol',
}


def _remaining(e: dict) -> str:
    """For a configuration not yet early-stopped: the training still ahead, at the measured rate."""
    tr, st = e["training"], e["settings"]
    if tr["stopped_by"] == "early_stopping" or not tr["epochs_run"] or st.get("patience") is None:
        return ""
    minutes = tr.get("training_seconds_all_slices", tr["training_seconds"]) / 60
    per_epoch = minutes / tr["epochs_run"]
    at_least = max(0, (tr["best_epoch"] or 0) + st["patience"] - tr["epochs_run"])
    at_most = st["epochs_max"] - tr["epochs_run"]
    return (
        f"; not converged: at the measured {per_epoch * 60:.0f} s per epoch, early stopping needs at least "
        f"{at_least} more epochs ({at_least * per_epoch / 60:.1f} h), the {st['epochs_max']}-epoch cap "
        f"{at_most * per_epoch / 60:.0f} h"
    )


def mnist_nll_rows(r: dict) -> list[list[str]]:
    rows = []
    for name in MNIST_WHAT:
        e = r["configs"].get(name)
        if not e or "test" not in e:
            continue
        tr, check = e["training"], e["target_check"]
        ref = e["reference"].get("log_likelihood")
        published = f"; published {-ref:.2f}" if ref is not None else ""
        if name == "mixture":
            better = "better" if check["met"] else "worse"
            verdict = f"{better} than the standard prior by {abs(check['by_nats']):.2f}: target {'met' if check['met'] else 'missed'}"
        else:
            verdict = f"{_verdict(check['met'], check['target'].removeprefix('NLL '))}, by {abs(check['by_nats']):.2f}"
        minutes = tr.get("training_seconds_all_slices", tr["training_seconds"]) / 60
        slices = len(tr.get("slices", [])) or 1
        stop = {
            "early_stopping": "early-stopped",
            "time_budget": "stopped by the time budget",
            "epochs": "epoch limit",
        }[tr["stopped_by"]]
        result = (
            f"**{e['test']['nll']:.2f} ± {e['test']['nll_se']:.2f} nats** ({verdict}{published}); "
            f"{tr['epochs_run']} epochs ({stop}, best {tr['best_epoch']}), {minutes:.0f} min training"
            f"{f' in {slices} slices' if slices > 1 else ''} + {e['evaluation_seconds'] / 60:.0f} min evaluation"
            + _remaining(e)
        )
        # entries are merged from runs of their own: the file's count belongs to the last run
        threads = e["run"].get("torch_threads")
        commands = [
            _code(s["command"])
            if s.get("command")
            else f"(a {s['epochs_run_in_slice']}-epoch slice whose results were not written)"
            for s in tr.get("slices", [])
        ] or [_code(e["run"]["command"])]
        rows.append(
            [
                MNIST_WHAT[name],
                result,
                _when(r["machine"], e["run"]["date"], threads),
                "; then ".join(commands),
            ]
        )
    return rows


AIS_WHAT = {
    "standard": "standard prior",
    "mixture": "mixture prior",
    "vamp": "VampPrior",
    "iwae": "IWAE (K = 50)",
    "gated": "gated networks, standard prior",
    "gated_vamp": "gated networks, VampPrior",
}


def _gap_spread(b: dict) -> str:
    """A mean gap can be one image's: the median (recorded since 2026-11-29) and the largest."""
    median = f"median {b['gap_median']:.2f}, " if "gap_median" in b else ""
    return f"{median}largest {b['gap_max']:.2f}"


def ais_vs_is_rows(r: dict) -> list[list[str]]:
    rows = []
    for name in AIS_WHAT:
        e = r["configs"].get(name)
        if not e:
            continue
        st = e.get("settings", r["settings"])  # entries before 2026-11-29 kept none of their own
        i, a, g, b = e["importance"], e["ais"], e["ais_minus_importance"], e["bdmc"]
        result = (
            f"NLL by IS **{-i['log_likelihood']:.2f}**, by AIS **{-a['log_likelihood']:.2f}**: "
            f"AIS − IS {g['mean']:+.2f} ± {g['se']:.2f} nats per point (paired; > 0: IS was low); "
            f"AIS ESS {a['ess_mean']:.1f} of {a['num_chains']}, acceptance {a['acceptance_mean']:.2f}; "
            f"BDMC on {b['num_points']} simulated images: lower {b['lower']:.2f}, upper {b['upper']:.2f}, "
            f"gap {b['gap_mean']:.2f} nats ({_gap_spread(b)}); seconds per point: IS {i['seconds_per_point']:.3f}, "
            f"AIS {a['seconds_per_point']:.2f}, BDMC {b['seconds_per_point']:.2f}"
        )
        what = (
            f"binarized MNIST, {AIS_WHAT[name]}: IS (K = {st['is_samples']}) against AIS (T = {st['ais_steps']}, "
            f"{st['ais_chains']} chains, {st['ais_leapfrog']} leapfrog steps) on the same {e['num_points']} "
            "test images drawn at random"
        )
        rows.append(
            [
                what,
                result,
                _when(r["machine"], e["date"], e.get("torch_threads")),
                _code(e["command"]),
            ]
        )
    return rows


def likelihoods_rows(r: dict) -> list[list[str]]:
    s, lik = r["settings"], r["likelihoods"]
    scored = sorted(
        (e["test"]["bits_per_dim"], n) for n, e in lik.items() if "test" in e and e.get("valid_density")
    )
    parts = [
        f"`{n}` {'**' if i == 0 else ''}{b:.3f}{'**' if i == 0 else ''}" for i, (b, n) in enumerate(scored)
    ]
    invalid = [
        f"`{n}` {e['test']['bits_per_dim']:.3f}"
        for n, e in lik.items()
        if "test" in e and not e.get("valid_density")
    ]
    failed = [f"`{n}` failed" for n, e in lik.items() if "test" not in e]
    result = ", ".join(parts)
    if invalid:
        result += f"; {', '.join(invalid)} on grey levels: not a density there, not comparable"
    if failed:
        result += f"; {', '.join(failed)}"
    epochs = ", ".join(f"{n} {e['training']['epochs_run']}" for n, e in lik.items() if "training" in e)
    what = (
        f"grey-level MNIST dequantized (x + u)/256, same networks, N(0, I) prior; {s['train_points']} training / "
        f"{s['test_points']} test images, at most {s['max_minutes']:g} min per likelihood (epochs: {epochs}), "
        f"K = {s['eval_samples']}; test bits/dim, lower is better"
    )
    return [[what, result, _when(r["machine"], r["date"]), _code(r["command"])]]


def networks_rows(r: dict) -> list[list[str]]:
    s, rows = r["settings"], []
    for name, runs in r["runs"].items():
        scored = [(e["test"]["bits_per_dim"], n, e) for n, e in runs.items() if "test" in e]
        parts = [
            f"`{n}` {b:.3f} ({e['training']['epochs_run']} epochs, {e['parameters'] / 1e6:.2f}M weights)"
            for b, n, e in sorted(scored, key=lambda t: t[0])
        ]
        parts += [f"`{n}` failed" for n, e in runs.items() if "test" not in e]
        what = (
            f"grey-level MNIST, `{name}` likelihood: conv vs mlp at {s['max_minutes']:g} min training each "
            f"({s['device']}), K = {s['eval_samples']}; test bits/dim, lower is better"
        )
        rows.append([what, ", ".join(parts), _when(r["machine"], r["date"]), _code(r["command"])])
    if "speed" in r:
        sp = r["speed"]
        result = (
            f"fit {sp['fit_epochs_per_second']:.3f} epochs/s, plain PyTorch loop {sp['plain_epochs_per_second']:.3f} "
            f"epochs/s ({sp['images']} images, batch {sp['batch_size']})"
        )
        what = (
            f"conv VAE training speed on {sp['device_name']}: `pyro_vae.fit` vs a plain loop, same networks"
        )
        rows.append([what, result, _when(r["machine"], r["date"]), _code(r["command"])])
    return rows


def main_job_rows(r: dict) -> list[list[str]]:
    result = (
        f"{r['wall_seconds']:.0f} s in all, {r['epochs']} epochs, `{r['likelihood']}` chosen; "
        f"test {r['test_bits_per_dim']:.2f} bits/dim"
    )
    return [
        [
            "the main job, `pyro-vae train` with no flags (embedded digits)",
            result,
            _when(r["machine"], r["date"]),
            _code("python benchmarks/main_job.py"),
        ]
    ]


def tables_rows(r: dict) -> list[list[str]]:
    rows = []
    s = r["settings"]
    for name, e in r["tables"].items():
        m, best = e["summary"], e["summary"]["best_classical"]
        d, gap = m["log_px"], m["pyro_vae_minus_best_classical"]
        others = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if k != "pyro_vae"
        )
        rmse = m["rmse"]
        result = (
            f"log p(x) per row: pyro_vae **{d['pyro_vae']:.2f}**, best classical ({best}) {d[best]:.2f}: "
            f"{gap:+.2f} nats ({_verdict(gap >= 0, 'match or beat the best')}; all: {others}); "
            f"imputation RMSE (30% of cells hidden): pyro_vae **{rmse['pyro_vae']:.3f}**, IterativeImputer "
            f"{rmse['iterative']:.3f}, KNN {rmse['knn']:.3f}, mean {rmse['mean']:.3f} "
            f"({_verdict(m['pyro_vae_beats_iterative'], 'beat IterativeImputer')})"
        )
        missing = f", {e['missing_cells']} missing cells" if e["missing_cells"] else ""
        what = (
            f"table `{name}` ({e['rows']} rows, {e['columns']} columns{missing}): pyro_vae's default path vs "
            f"scikit-learn's estimators tuned on validation; test set, data units, mean of {s['seeds']} random 60/20/20 splits"
        )
        rows.append(
            [what, result, _when(r["machine"], r["date"], s.get("torch_threads")), _code(r["command"])]
        )
    return rows


def defaults_rows(r: dict) -> list[list[str]]:
    summary = r["summary"]
    base = summary.get("default")
    if base is None:
        return []
    parts = [
        f"`{name}` {e['mean_test_log_px'] - base['mean_test_log_px']:+.2f} (rank {e['mean_rank_test']:.1f})"
        for name, e in sorted(summary.items(), key=lambda kv: kv[1]["mean_rank_test"])
        if name != "default"
    ]
    tables = sorted({key.split("/")[0] for key in r["entries"]})
    result = (
        f"the default path: mean rank **{base['mean_rank_test']:.1f}** of {len(summary)} over {base['cases']} "
        f"table splits; each alternative's mean test log p(x) per row against it: {', '.join(parts)}"
    )
    what = (
        f"fit's default recipe against one change at a time, on {', '.join(tables)} (model units, test split)"
    )
    return [[what, result, _when(r["machine"], r["date"], r.get("torch_threads")), _code(r["command"])]]


def threads_rows(r: dict) -> list[list[str]]:
    c = r["contention"]
    runs = c["runs"]
    fixed = sorted({k.rsplit("_", 1)[0] for k in runs} - {"policy"})
    parts = [
        f"{label.replace('_', ' ')}: {runs[f'{label}_idle']['wall_seconds']:.1f} s idle, "
        f"{runs[f'{label}_busy']['wall_seconds']:.1f} s busy"
        for label in fixed
    ]
    target = f"<= {c['target_busy_over_idle']}x"
    result = (
        f"default thread policy: {runs['policy_idle']['wall_seconds']:.1f} s idle, "
        f"{runs['policy_busy']['wall_seconds']:.1f} s beside the busy process: "
        f"**{c['policy_busy_over_policy_idle']:.2f}x** ({_verdict(c['met'], target)}); "
        f"{'; '.join(parts)}"
    )
    what = "the main job on an idle machine and beside one busy process (a Python loop holding a core)"
    return [[what, result, _when(r["machine"], r["date"]), _code(r["command"])]]


def ddp_rows(r: dict) -> list[list[str]]:
    rows = {(x["processes"], x["batch_per_process"]): x for x in r["rows"]}
    parts = [
        f"{p} processes x batch {b}: {x['speedup_vs_1_process']:.2f}x"
        for (p, b), x in sorted(rows.items())
        if p > 1
    ]
    result = f"{'; '.join(parts)} the images/s of 1 process x batch 128 (see docs/distributed.md)"
    return [
        [
            "DDP (gloo) on the same cores: 2 processes vs 1",
            result,
            _when(r["machine"], r["date"]),
            _code(r["command"]),
        ]
    ]


ROWS: list[tuple[str, Callable[[dict], list[list[str]]]]] = [
    ("speed", speed_rows),
    ("eval_speed", eval_speed_rows),
    ("mnist_nll", mnist_nll_rows),
    ("ais_vs_is", ais_vs_is_rows),
    ("likelihoods", likelihoods_rows),
    ("networks", networks_rows),
    ("main_job", main_job_rows),
    ("threads", threads_rows),
    ("tables", tables_rows),
    ("defaults", defaults_rows),
    ("ddp_scaling", ddp_rows),
]


def render(results_dir: Path = RESULTS_DIR) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name, rows in ROWS:
        result = _load(results_dir, name)
        if result is not None:
            lines += [
                "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows(result)
            ]
    return "\n".join(lines)


def replace_block(text: str, table: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"the README has no {BEGIN} ... {END} block to fill")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="replace the table in this file")
    group.add_argument(
        "--check", metavar="README", help="exit 1 if this file's table differs from the results"
    )
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    table = render(Path(args.results_dir))
    if args.write:
        path = Path(args.write)
        path.write_text(replace_block(path.read_text(), table))
        print(f"wrote the benchmark table into {path}")
    elif args.check:
        text = Path(args.check).read_text()
        expected = replace_block(text, table)
        if expected != text:
            sys.stdout.writelines(
                difflib.unified_diff(text.splitlines(True), expected.splitlines(True), args.check, "rendered")
            )
            print(
                f"\n{args.check}: the benchmark table is stale; run python benchmarks/readme_table.py --write {args.check}"
            )
            return 1
        print(f"{args.check}: the benchmark table matches benchmarks/results")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
