"""The README's and docs/benchmarks.md's figures, rendered from the committed results files.

    python benchmarks/readme_table.py                   # print the full benchmark table
    python benchmarks/readme_table.py --write           # fill README.md and docs/benchmarks.md
    python benchmarks/readme_table.py --write README.md # fill one file
    python benchmarks/readme_table.py --check           # exit 1 if either file is stale

A page holds one or more blocks between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
markers, each filled by its renderer in ``BLOCKS``: ``benchmarks``, the full table (in
docs/benchmarks.md) and ``notes``, what its rows mean, ``headline``, its few rows for the front
page, and ``kl_answers``, the README's answers to the four KL questions from
``docs/kl_weighting/results.json``. Every cell
comes from a results file, so a number in the README or the docs cannot drift from the run
that produced it; the test suite runs ``--check``. Rows whose results file is missing are
left out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
KL_RESULTS = ROOT / "docs" / "kl_weighting" / "results.json"
PAGES = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md")  # what --write and --check fill by default


def markers(name: str) -> tuple[str, str]:
    """The comments a block of this name sits between."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


BEGIN, END = markers("benchmarks")
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


SDV_NAMES = {"tvae": "TVAE", "ctgan": "CTGAN", "gaussian_copula": "GaussianCopula"}


def _lowest_share(synth: dict) -> float:
    """The smallest share of the requested rows a synthesizer returned over a table's rare conditions."""
    return min(c["success_rate"] for c in synth["conditional"].values())


def sdv_rows(r: dict) -> list[list[str]]:
    """Synthetic rows against SDV's synthesizers: the quality score per table and the rare conditions."""
    tables = r["tables"]
    quality = {n: {k: s["quality"] for k, s in e["synthesizers"].items()} for n, e in tables.items()}
    ahead = [n for n, q in quality.items() if q["pyro_vae"] > max(q["tvae"], q["ctgan"])]
    behind = [n for n in quality if n not in ahead]
    listed = "; ".join(
        f"`{n}` {q['pyro_vae']:.3f} (" + ", ".join(f"{SDV_NAMES[k]} {q[k]:.3f}" for k in SDV_NAMES) + ")"
        for n, q in quality.items()
    )
    lowest = {
        k: min(_lowest_share(e["synthesizers"][k]) for e in tables.values()) for k in ("pyro_vae", *SDV_NAMES)
    }
    rare = ", ".join(f"{SDV_NAMES.get(k, 'pyro_vae')} {v:.0%}" for k, v in lowest.items())
    target = "ahead of TVAE and CTGAN on every table"
    result = (
        f"SDMetrics quality score ahead of both TVAE and CTGAN on **{len(ahead)} of {len(tables)}** tables "
        f"({_verdict(not behind, target)}"
        + (f", behind on {', '.join(f'`{n}`' for n in behind)}" if behind else "")
        + f"): {listed}. Rare conditions, the smallest share of the requested rows returned: {rare}"
    )
    what = (
        f"synthetic rows of {len(tables)} tables, pyro_vae's `sample` (and `sample(given=...)`) against "
        f"SDV's GaussianCopula, TVAE and CTGAN (scored on held-out rows; {r['settings']['split']}, seed "
        f"{r['settings']['seed']})"
    )
    return [
        [
            what,
            result,
            _when(r["machine"], r["date"], r["settings"].get("torch_threads")),
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
    ("sdv", sdv_rows),
]


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(results_dir: Path = RESULTS_DIR) -> str:
    """The full benchmark table: every row of every results file in ``results_dir``."""
    rows = []
    for name, make_rows in ROWS:
        result = _load(results_dir, name)
        if result is not None:
            rows += make_rows(result)
    return _table(rows)


def tables_summary_rows(r: dict) -> list[list[str]]:
    """The tables benchmark in one row: how often the default path met each of its two targets."""
    tables = r["tables"]
    gaps = {name: e["summary"]["pyro_vae_minus_best_classical"] for name, e in tables.items()}
    beats = [name for name, e in tables.items() if e["summary"]["pyro_vae_beats_iterative"]]
    listed = ", ".join(f"`{name}` {gap:+.2f}" for name, gap in gaps.items())
    classical = sorted({k for e in tables.values() for k in e["summary"]["log_px"]} - {"pyro_vae"})
    result = (
        f"log p(x) per row matches or beats the best classical estimator ({', '.join(classical)}) "
        f"on **{sum(gap >= 0 for gap in gaps.values())} of {len(gaps)}** tables (nats per row against the "
        f"best: {listed}); imputation RMSE beats IterativeImputer on **{len(beats)} of {len(tables)}**"
    )
    what = (
        f"{len(tables)} real tables, pyro_vae's default path vs scikit-learn's estimators tuned on validation "
        f"(test set, data units, mean of {r['settings']['seeds']} random splits)"
    )
    return [
        [
            what,
            result,
            _when(r["machine"], r["date"], r["settings"].get("torch_threads")),
            _code(r["command"]),
        ]
    ]


# The front page's rows: one speed figure, the MNIST likelihoods against their published values,
# the tables in one row and the main job.
HEADLINE_MNIST = ("standard", "gated", "gated_vamp")


def headline_mnist_rows(r: dict) -> list[list[str]]:
    """The MNIST rows of ``HEADLINE_MNIST``, as the full table renders them."""
    return mnist_nll_rows({**r, "configs": {n: e for n, e in r["configs"].items() if n in HEADLINE_MNIST}})


HEADLINE: list[tuple[str, Callable[[dict], list[list[str]]]]] = [
    ("speed", speed_rows),
    ("mnist_nll", headline_mnist_rows),
    ("tables", tables_summary_rows),
    ("sdv", sdv_rows),
    ("main_job", main_job_rows),
]


def render_headline(results_dir: Path = RESULTS_DIR) -> str:
    """The front page's few rows, each exactly as the full table renders it."""
    rows = []
    for name, make_rows in HEADLINE:
        result = _load(results_dir, name)
        if result is not None:
            rows += make_rows(result)
    return _table(rows)


def _kl_row(rows: list[dict], likelihood: str) -> dict:
    return next(row for row in rows if row["likelihood"] == likelihood)


def _run(runs: dict, prefix: str) -> dict:
    return next(run for key, run in runs.items() if key.startswith(prefix))


def kl_answers(r: dict) -> str:
    """The four questions about weighting the KL, answered with ``examples/kl_weighting.py``'s figures."""
    sig = r["learned_sigma"]["rows"]
    learned = [_kl_row(sig, name)["log_px"] for name in ("gaussian", "gaussian_shared")]
    fixed = [row["log_px"] for row in sig if row["likelihood"] == "gaussian_fixed"]
    than = "better than every" if min(learned) > max(fixed) else "against"
    grad = max(row["grad_relative_difference"] for row in r["lambda"]["rows"])
    runs, features = r["averaging"]["runs"], r["averaging"]["num_features"]
    summed, averaged = _run(runs, "summed"), _run(runs, "averaged")
    off = summed["active_units"] - averaged["active_units"]
    low = min(r["beta"]["sweep"], key=lambda row: row["beta"])
    exceeds = (
        "exceeds {0}, so it is no longer a bound" if low["objective_exceeds_log_px"] else "stays below {0}"
    )
    return "\n".join(
        [
            f"Every number below comes from `{r['command']}` ({r['date']}, {r['machine']}), explained in "
            "[docs/kl_weighting.md](docs/kl_weighting.md).",
            "",
            "* **My data is not in [0, 1]: which reconstruction loss?** A likelihood for the data's support "
            '(`likelihood="auto"` picks one and says why) with a *learned* noise level. On a real-valued table, '
            f"`gaussian` (σ(z)) and `gaussian_shared` (one σ per feature) reach a test log p(x) of {learned[0]:.2f} "
            f"and {learned[1]:.2f} nats, {than} λ of a sweep of `MSE + λ·KL` ({min(fixed):.2f} to {max(fixed):.2f}); "
            f"`gaussian_optimal` (σ-VAE) gets {_kl_row(sig, 'gaussian_optimal')['log_px']:.2f} without a sweep.",
            "* **How do I weight MSE against KL (`mse + 1e-4 * kl`)?** You are choosing a noise level: "
            "`MSE + λ·KL` (MSE averaged over D features) is the ELBO of a Gaussian with σ² = Dλ/2, same gradients "
            f"up to a factor (relative difference {grad:.0e} in the check). Learn σ instead.",
            f"* **Average the loss over pixels or sum it?** Sum. Averaging is β = D: on the digits (D = {features}) "
            f"it switched off {off} of the {summed['active_units']} active latent dimensions (KL "
            f"{averaged['kl']:.2f} nats) and the reconstructions collapsed to one image (spread "
            f"{averaged['reconstruction_spread']:.2f} against {summed['reconstruction_spread']:.2f} summed).",
            "* **Can I put a λ in front of the KL?** Yes, as an explicit β (`fit(..., beta=...)`, `poutine.scale` "
            "on the latent site, exactly reconstruction − β·KL), knowing it is a different objective: with "
            f"β = {low['beta']:g} the objective ({low['beta_objective']:.2f}) "
            + exceeds.format(f"the model's own log p(x) ({low['log_px']:.2f})")
            + ". No prior reproduces λ·KL (the entropy term keeps weight 1); a prior swap "
            "(`mixture`, `vamp`, `flow`, ...) changes what the KL charges for while the ELBO stays a bound.",
        ]
    )


def render_kl_answers(results_dir: Path = RESULTS_DIR) -> str:
    """``kl_answers`` from ``docs/kl_weighting/results.json`` (it does not live in ``results_dir``)."""
    if not KL_RESULTS.is_file():
        raise SystemExit(f"{KL_RESULTS} is missing: run python examples/kl_weighting.py --threads 1")
    return kl_answers(json.loads(KL_RESULTS.read_text()))


def speed_note(r: dict) -> str:
    """What the training-speed row means, with ``speed.json``'s phase and what-if figures."""
    step = r["what_if"]["ratio_over_plain"]["fit's step (Trace_ELBO traced once, replayed)"]
    epochs, phases = r["per_epoch"], r["step_breakdown_ms"]
    data = {b: phases[b]["difference_pyro_vae_minus_plain"]["data"] for b in ("128", "512")}
    vamp = r["vamp_anatomy"]
    return (
        "- **Training speed.** `fit`'s step does not build Pyro's two traces every step: each structure of "
        "the model (data shape, kind of β, train or eval mode, missing cells) is traced by Pyro once, checked "
        "(exactly the sites `z` and `x`, the latent reparameterised, no handler around the call, the same loss "
        "at the same draws), and then the same `Trace_ELBO` is computed from the VAE's own distributions "
        "(`tests/test_step.py` holds it equal to Pyro's in value and gradients for every likelihood and prior, "
        f"and checks the fall-backs). The what-if rows of `speed.json` give the whole step at {step:.2f}x the "
        "plain loop's; what remains of the epoch gap is the Monte Carlo KL (log q − log p against the plain "
        "loop's closed form, `forward`), the per-pixel Bernoulli terms that the observation site needs before "
        "its sum, and their backward passes, per step and roughly proportional to the batch (the phase table "
        "in `speed.json`). fit's `DataLoader` serves a batch of an in-memory tensor with one `index_select` on "
        f"rows made contiguous: its `data` phase is {data['128']:.2f} ms per step above the plain loop's slicing "
        f"at batch 128 and {data['512']:.2f} at 512. The epoch row also carries fit's set-up per call, about "
        f"{epochs['128']['pyro_vae_fit_setup_seconds']:.2f} s (`pyro_vae_fit_setup_seconds`), which the "
        "benchmark pays every epoch because it calls `fit(epochs=1)`; the loop alone is "
        f"{epochs['128']['ratio_pyro_vae_loop_over_plain']:.2f}x the plain loop's at batch 128 and "
        f"{epochs['512']['ratio_pyro_vae_loop_over_plain']:.2f}x at 512 (`ratio_pyro_vae_loop_over_plain`). "
        "Removed before: Pyro's optimizer wrappers, argument validation inside the loop, torch's slow broadcast "
        "cross-entropy kernel, and the per-tensor Adam loop (fit uses torch's fused Adam; the plain loop gets "
        "the same, and the ratio against a loop with torch's default Adam is given beside it). **VampPrior:** "
        f"`speed.json`'s `vamp_anatomy` takes its step apart ({vamp['vamp_over_standard']:.2f}x the standard "
        f"prior's at batch {vamp['batch_size']}): the encoder over the {vamp['pseudo_inputs']} pseudo-inputs "
        f"(forward and backward, once per step) is {vamp['extra_explained_by']['pseudo_input_encodings']:.0%} "
        f"of the extra time and the {vamp['pseudo_inputs']}-component mixture density "
        f"{vamp['extra_explained_by']['mixture_density']:.0%}; the encoder simply runs over "
        f"{vamp['pseudo_inputs'] + vamp['batch_size']} rows instead of {vamp['batch_size']}."
    )


def _sci(x: float) -> str:
    """1.4e7, not 1.4e+07."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def threads_note(r: dict) -> str:
    """What the threads row means, with where a second thread starts to pay."""
    pay = r["where_threads_pay"]
    return (
        f"- **Threads.** `threads.py` measures where a second thread pays (on {pay['cores']} cores two threads "
        f"beat one from about {_sci(pay['smallest_paying_work'])} multiply-adds per step, batch x weights; the "
        f"library's policy asks for {_sci(pay['library_threshold_for_two_threads'])}) and runs the main job on an "
        "idle machine and beside one busy process, with the default policy and each fixed count. The policy "
        "gives up a thread only when two readings in a row (2 s each) find the core held, and the run report "
        "says how long training spent at each count when it changed."
    )


def eval_note(r: dict) -> str:
    """What the evaluation row means, with ``eval_speed.json``'s chunk scan."""
    scan = sorted(r["chunk_scan"].values(), key=lambda c: -c["draws_per_chunk"])
    costs = ", ".join(f"{c['microseconds_per_pair']:.2f} at {c['draws_per_chunk']}" for c in scan)
    return (
        "- **Evaluation speed.** The decoder's matrix products run near the `torch.mm` rate; the rest is mostly "
        "the element-wise log-sigmoid over K × 784 logits per point, which no matrix unit does (for binary data "
        "the Bernoulli log-probability is one fused log σ((2x − 1)·l); the row gives the ratio against torch's "
        "kernel). Importance weights come from the VAE's own distributions, without a Pyro trace per chunk. A "
        "chunk holds 2^20 numbers per intermediate (4 MiB, 1250 draws of 784 pixels), split evenly over a "
        "point's K draws: the element-wise passes then stay in a core's L2 cache when one thread does them all. "
        f"Microseconds per pair at {r['settings']['torch_threads']} threads, by draws per chunk: {costs} "
        "(`chunk_scan` in `eval_speed.json`). **Memory:** with two threads glibc kept the freed blocks of those "
        "temporaries, and one call over the 10000 test images grew with every image; evaluation now "
        "hands the heap's free pages back every 2 s (`utils.HeapTrim`, glibc's `malloc_trim`). The row's peak "
        "is over all 10000 images."
    )


def mnist_note(r: dict) -> str:
    """What the MNIST rows mean; the AIS figures are ``ais_vs_is.json``'s gated entries."""
    text = (
        "- **MNIST log-likelihoods.** Training is long on 2 cores, so `mnist_nll.py` takes a `--max-minutes` "
        "budget per configuration and continues each configuration, by default, from its checkpoint kept in "
        "the repository (`benchmarks/results/mnist_nll_checkpoints/<config>/`, replaced after every epoch; "
        "`--fresh` starts over), so that training adds up across sessions until early stopping ends it; every "
        "slice is recorded (start, end, epochs, wall seconds, load averages). `benchmarks/ais_vs_is.py` then "
        "scores each trained model on the same test images (1000 by default, drawn at random: the static test "
        "split is sorted by digit, so its first 1000 images are 980 zeros) by importance sampling and by AIS, "
        "and runs BDMC on simulated images, with the cost of each per point. The rows say which configurations "
        "early-stopped, which stopped on their budgets and the hours these still need (each VampPrior step also "
        "encodes the 500 pseudo-inputs, and each IWAE step decodes 50 samples per image; Burda et al. trained "
        "IWAE for 3280 epochs). Rows trained before checkpoints were kept in the repository have no model here "
        "and no AIS row. Test log p(x) is importance-sampled; `pyro-vae diagnose` finds k-hat above 0.7 for "
        "most test points of these models, so the reported NLLs are upper bounds whose tightness is not "
        "guaranteed."
    )
    gated, vamp = r["configs"].get("gated"), r["configs"].get("gated_vamp")
    if gated and vamp:
        text += (
            " AIS measures it on the two gated models (their rows): the IS figure is too high by "
            f"{gated['ais_minus_importance']['mean']:.2f} nats per image with the standard prior and by "
            f"{vamp['ais_minus_importance']['mean']:.2f} with the VampPrior. BDMC on images simulated from each "
            f"model bounds AIS's own error: {gated['bdmc']['gap_mean']:.2f} nats with the standard prior; with "
            f"the VampPrior the mean gap is {vamp['bdmc']['gap_mean']:.2f} nats and the largest "
            f"{vamp['bdmc']['gap_max']:.0f}. Where the gap is wide the forward chains, started from q(z|x), and "
            "the reverse chains, started from the true z, did not find the same posterior mass (the posterior a "
            "mixture prior makes can have several modes): there the AIS figure is a lower bound on log p(x) that "
            "need not be tight."
        )
    return text


NOTES: list[tuple[str, Callable[[dict], str]]] = [
    ("speed", speed_note),
    ("threads", threads_note),
    ("eval_speed", eval_note),
    ("ais_vs_is", mnist_note),
]


def render_notes(results_dir: Path = RESULTS_DIR) -> str:
    """docs/benchmarks.md's notes on the rows whose figures come from results files."""
    notes = [note(result) for name, note in NOTES if (result := _load(results_dir, name)) is not None]
    return "\n".join(notes)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "benchmarks": render,
    "headline": render_headline,
    "kl_answers": render_kl_answers,
    "notes": render_notes,
}


def replace_block(text: str, table: str, name: str = "benchmarks") -> str:
    """``text`` with the block ``name`` holding ``table``."""
    begin, end = markers(name)
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}\n{end}{tail}"


def fill(text: str, results_dir: Path = RESULTS_DIR, where: str = "the page") -> str:
    """``text`` with every block it holds rendered afresh; a page with none is an error."""
    found = [name for name in BLOCKS if all(m in text for m in markers(name))]
    if not found:
        names = ", ".join(markers(name)[0] for name in BLOCKS)
        raise SystemExit(f"{where} has no block to fill: add one of {names} with its :end marker")
    for name in found:
        text = replace_block(text, BLOCKS[name](results_dir), name)
    return text


def _check(path: Path, results_dir: Path) -> bool:
    text = path.read_text()
    expected = fill(text, results_dir, str(path))
    if expected == text:
        print(f"{path}: its figures match the results files")
        return True
    sys.stdout.writelines(
        difflib.unified_diff(text.splitlines(True), expected.splitlines(True), str(path), "rendered")
    )
    print(f"\n{path}: the figures are stale; run python benchmarks/readme_table.py --write {path}")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    defaults = " ".join(str(p.relative_to(ROOT)) for p in PAGES)
    group.add_argument(
        "--write", nargs="*", metavar="PAGE", help=f"fill these pages' blocks (default: {defaults})"
    )
    group.add_argument(
        "--check", nargs="*", metavar="PAGE", help=f"exit 1 if a page is stale (default: {defaults})"
    )
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    if args.write is not None:
        paths = [Path(p) for p in args.write] or list(PAGES)
        # every page rendered before the first is written: a page without blocks leaves all unchanged
        texts = [fill(path.read_text(), results_dir, str(path)) for path in paths]
        for path, text in zip(paths, texts, strict=True):
            path.write_text(text)
            print(f"wrote the figures into {path}")
    elif args.check is not None:
        fresh = [_check(path, results_dir) for path in [Path(p) for p in args.check] or PAGES]
        return 0 if all(fresh) else 1
    else:
        print(render(results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
