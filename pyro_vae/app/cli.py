"""Command line: ``pyro-vae train``, ``evaluate``, ``compare``, ``diagnose`` and ``sample``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import traceback
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from pyro_vae.app.config import SECTIONS, RunConfig, flag_of
from pyro_vae.app.rundir import check_output_file
from pyro_vae.distributions import guides, priors
from pyro_vae.errors import PyroVAEError
from pyro_vae.infer import selection
from pyro_vae.infer.distributed import PeerFailure
from pyro_vae.infer.objectives import BetaSchedule
from pyro_vae.infer.training import TrainingDiverged
from pyro_vae.registry import did_you_mean

# What the command line says where a flag does not map one-to-one onto a setting's field.
BETA_FLAGS = {
    "--beta": ("end", "the KL weight (1: the ELBO)"),
    "--warmup-epochs": (
        "warmup_epochs",
        "linear KL warm-up from --beta-start to --beta over this many epochs",
    ),
    "--beta-start": ("start", "the KL weight at the start of the warm-up"),
}
NONE_WORDS = ("none", "null", "off")


def _hidden(text: str) -> list[int]:
    if text.strip().lower() in ("", "none", "linear"):
        return []
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated widths like 256,256, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated integers like 2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"takes positive integers, got {text!r}")
    return values


def _width_options(text: str) -> list[list[int]]:
    return [_hidden(part) for part in text.split(";")]


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"scale\": 0.1}}', got {text!r}")
    return value


def _optional(parse, zero_is_none: bool = False):
    def parse_optional(text: str):
        if text.strip().lower() in NONE_WORDS:
            return None
        value = parse(text)
        return None if zero_is_none and value == 0 else value

    parse_optional.__name__ = parse.__name__  # argparse names the type in its messages
    return parse_optional


def _strings(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated prior names, got {text!r}")
    return names


def _scales(text: str) -> list[float]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--normal-scales takes comma-separated numbers like 0.5,2,5, got {text!r}"
        ) from None


def _patience(text: str) -> int | None:
    value = int(text)
    return None if value <= 0 else value


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, ``pyro-vae: error: ...``, and point to ``--help``
    (the usage text, several lines, is what ``--help`` shows)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"pyro-vae: error: {message} (see {self.prog} --help)\n")


def _check_unknown_flags(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]
) -> None:
    """Refuse what the command did not recognise, with a "did you mean" for a mistyped flag."""
    if not extras:
        return
    command = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001 (argparse keeps them there)
    known = list(command._option_string_actions)  # noqa: SLF001
    hints = ""
    for word in extras:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            hints += did_you_mean(flag, known).replace(" Did you mean", f" {flag}: did you mean")
    command.error(f"unrecognized arguments: {' '.join(extras)}.{hints}".rstrip("."))


def _choice(parse, key: str, choices):
    """``parse``, then the value checked against ``choices`` (a callable: read when the flag is
    parsed, so plug-ins registered later count) with a "did you mean" for a mistyped name."""

    def parse_choice(text: str):
        value = parse(text)
        allowed = list(choices() if callable(choices) else choices)
        if value is not None and value not in allowed:
            raise argparse.ArgumentTypeError(
                f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}."
                f"{did_you_mean(str(value), map(str, allowed))}"
            )
        return value

    parse_choice.__name__ = parse.__name__  # argparse names the type in its messages
    return parse_choice


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-vae", description="Variational autoencoders as Pyro models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train, evaluate and report a VAE", description="Train, evaluate and report a VAE."
    )
    t.add_argument("--config", type=Path, help="a run config JSON (or a run directory) to start from")
    t.add_argument(
        "--out", type=Path, default=Path("runs/latest"), help="output directory (default runs/latest)"
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (or its interrupted .partial directory) from its last checkpoint",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out; the old run stays whole until the new one has succeeded",
    )
    t.add_argument(
        "--nproc", type=int, help="train in N processes on this machine (DDP, launched with torchrun)"
    )
    add_run_flags(t)

    c = _config_command(
        sub,
        "compare",
        "train the same VAE under every prior and compare them",
        "Train the same VAE (data, seed, networks, budget) under each prior; write "
        "comparison.md/.csv/.json, figures and one run directory per prior.",
    )
    c.add_argument(
        "--out", type=Path, default=Path("runs/compare"), help="output directory (default runs/compare)"
    )
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds; the old comparison stays whole until the new one has succeeded",
    )
    c.add_argument(
        "--priors",
        type=_names,
        help=f"comma-separated prior names (default: every registered prior: {','.join(priors.names())})",
    )
    c.add_argument(
        "--normal-scales",
        type=_scales,
        help="scales at which the prior 'normal' runs, e.g. 0.5,2,5 (the default); 'none': its default scale",
    )
    c.add_argument(
        "--guides",
        type=_names,
        help="compare guides instead of priors: comma-separated guide names, e.g. diagonal,lowrank,flow "
        f"(registered: {','.join(guides.names())}); the prior is --prior's",
    )
    c.add_argument(
        "--quick", action="store_true", help="a smoke run: 10 epochs, hidden 64, 100 importance samples"
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_run_flags(c, skip=("model.prior", "model.prior_options"))

    s = _config_command(
        sub,
        "select",
        "choose the latent size and hidden widths by validation log p(x)",
        "Train one VAE per latent size and hidden widths (the other settings as for train), "
        "print each one's validation log p(x) and the train flags of the best.",
    )
    s.add_argument(
        "--latent-dims",
        type=_ints,
        default=list(selection.LATENT_DIMS),
        help=f"latent sizes to try (default {','.join(map(str, selection.LATENT_DIMS))})",
    )
    s.add_argument(
        "--widths",
        type=_width_options,
        default=[list(h) for h in selection.HIDDEN],
        help="hidden widths to try, separated by ';' (default "
        + ";".join(",".join(map(str, h)) for h in selection.HIDDEN)
        + ")",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_run_flags(s, skip=("model.latent_dim", "model.hidden"))

    e = sub.add_parser("evaluate", help="re-evaluate a saved run", description="Re-evaluate a saved run.")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--num-samples", type=int)
    e.add_argument("--split", choices=["train", "valid", "test"])
    e.add_argument("--data-dir")
    e.add_argument("--output", type=Path, help="also write the metrics as JSON here")
    e.add_argument(
        "--method",
        choices=["importance", "ais"],
        default="importance",
        help="log p(x) by importance sampling (K = --num-samples) or annealed importance sampling",
    )
    e.add_argument("--ais-steps", type=int, default=500, help="AIS: intermediate distributions (default 500)")
    e.add_argument("--ais-chains", type=int, default=16, help="AIS: chains per point (default 16)")
    e.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="also report log p(x) and the ELBO after this many SVI steps per point on the guide's "
        "parameters (semi-amortized, docs/guides.md; default 0: none)",
    )
    e.add_argument("--no-progress", action="store_true")

    d = sub.add_parser(
        "diagnose",
        help="ArviZ diagnostics of a saved run's amortized posterior",
        description="PSIS k-hat of the importance weights, NUTS posteriors of single points against "
        "q(z|x), posterior predictive checks (docs/diagnostics.md).",
    )
    d.add_argument("run_dir", type=Path)
    d.add_argument("--num-samples", type=int, default=1000, help="draws from q(z|x) per point (default 1000)")
    d.add_argument(
        "--num-points", type=int, default=200, help="N points of the split, drawn at random (default 200)"
    )
    d.add_argument(
        "--nuts-points", type=int, default=2, help="points (largest k-hat) sampled by NUTS (default 2)"
    )
    d.add_argument("--nuts-chains", type=int, default=2)
    d.add_argument("--nuts-warmup", type=int, default=500)
    d.add_argument("--nuts-draws", type=int, default=500)
    d.add_argument("--is-samples", type=int, default=10000, help="draws for the NUTS points' log p(x)")
    d.add_argument("--split", choices=["train", "valid", "test"])
    d.add_argument("--data-dir")
    d.add_argument("--out", type=Path, help="output directory (default: the run directory)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")

    sm = sub.add_parser(
        "sample",
        help="synthetic rows of a table run as CSV, optionally given some columns",
        description="Synthetic rows of a table run (--dataset csv) in the table's own units and labels; "
        "--given draws the other columns from their conditional by importance resampling.",
    )
    sm.add_argument("--run", type=Path, required=True, help="the run directory")
    sm.add_argument("-n", type=int, required=True, help="the number of rows")
    sm.add_argument("--given", type=_json_object, help='columns to condition on, e.g. \'{"sex": "female"}\'')
    sm.add_argument("--out", type=Path, required=True, help="the CSV file to write (never overwritten)")
    sm.add_argument(
        "--num-samples", type=int, default=1000, help="importance proposals for --given (default 1000)"
    )
    sm.add_argument("--seed", type=int, default=0)
    return parser


def _config_command(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A command that starts from a run config: its parser with ``--config``."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("--config", type=Path, help="a run config JSON (or a run directory) to start from")
    return parser


def add_run_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per setting of :class:`~pyro_vae.app.config.RunConfig`, generated from its fields.

    Each flag's help shows the setting's default; ``skip`` names settings (``"model.prior"``)
    a command sets itself. Flags left out keep the value of ``--config`` (or the default).
    """
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section)
        defaults = cls()
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key in skip:
                continue
            if hints[f.name] is BetaSchedule:
                for flag, (name, text) in BETA_FLAGS.items():
                    default = getattr(defaults.beta, name)
                    group.add_argument(
                        flag,
                        dest=f"{key}.{name}",
                        type=float,
                        metavar="EPOCHS" if name == "warmup_epochs" else "BETA",
                        default=argparse.SUPPRESS,
                        help=f"{text} (default {default:g})",
                    )
                continue
            _add_flag(group, key, f, hints[f.name], getattr(defaults, f.name))


def _add_flag(group, key: str, f: dataclasses.Field, tp, default) -> None:
    meta = f.metadata
    flag = flag_of(key)
    choices_source = meta.get("choices")
    choices = (
        list(choices_source() if callable(choices_source) else choices_source) if choices_source else None
    )
    text = meta.get("help", "")
    if choices:
        text += f"; one of {', '.join(map(str, choices))}"
    shown = ",".join(map(str, default)) if isinstance(default, list) else json.dumps(default)
    if "(default" not in text:
        text += f" (default {shown})"
    # SUPPRESS: a flag that was not given leaves no attribute, so it cannot override --config.
    kwargs: dict = {"dest": key, "help": text, "default": argparse.SUPPRESS}
    if _base(tp) is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _parser(f.name, tp)
        if choices_source is not None:
            kwargs["type"] = _choice(kwargs["type"], key, choices_source)
        kwargs["metavar"] = f.name.upper()
    group.add_argument(flag, **kwargs)


def _base(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _parser(name: str, tp):
    base = _base(tp)
    if typing.get_origin(base) is list:
        parse = _strings if typing.get_args(base) == (str,) else _hidden
    elif base is dict:
        parse = _json_object
    elif base in (int, float):
        parse = base
    else:
        parse = str
    return _optional(parse, zero_is_none=name in ("patience", "lr_patience")) if base is not tp else parse


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config of ``train`` or ``compare``: a config file or the defaults, then the flags."""
    if args.config:
        cfg = RunConfig.from_json(args.config)
    elif getattr(args, "resume", False):
        from pyro_vae.app.rundir import RunDirectory

        cfg = RunConfig.from_json(RunDirectory(args.out).source)
    elif args.command == "compare":
        from pyro_vae.app.compare import default_config

        cfg = default_config()
    else:
        cfg = RunConfig()
    if getattr(args, "quick", False):
        from pyro_vae.app.compare import make_quick

        cfg = make_quick(cfg)
    return apply_flags(cfg, args)


def apply_flags(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``cfg`` with every flag that was given, each value checked by its setting."""
    changes: dict[str, dict] = {}
    for dest, value in vars(args).items():
        parts = dest.split(".")
        if parts[0] not in SECTIONS:
            continue
        section, name = parts[0], parts[1]
        if len(parts) == 3:  # the beta schedule's fields
            beta = changes.setdefault(section, {}).setdefault(name, getattr(cfg.train, name).to_dict())
            beta[parts[2]] = value
        else:
            changes.setdefault(section, {})[name] = value
    for section, values in changes.items():
        cfg = cfg.replace(section, **values)
    return cfg


def _without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status.

    Args:
        argv: the arguments after ``pyro-vae`` (default ``sys.argv[1:]``).

    Returns:
        0 on success; an expected failure (:data:`EXPECTED`) is one line on stderr and 2 (1 for a
        diverged run or a lost peer); any other exception is an internal error, one line and 3.
        ``--debug`` prints the traceback before the line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    _check_unknown_flags(parser, args, extras)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pyro_vae.app.run import launched_by_torchrun
    from pyro_vae.infer import distributed

    if args.command == "train" and args.nproc is not None and not launched_by_torchrun():
        if args.nproc < 1:
            print("pyro-vae: error: --nproc must be at least 1", file=sys.stderr)
            return 2
        if args.nproc > 1:
            return distributed.launch(args.nproc, _without_nproc(argv))
    ok = False
    try:
        code = COMMANDS[args.command](args)
        ok = True
        return code
    except EXPECTED as e:
        _traceback(args)
        return _report(e)
    except Exception as e:  # not the user's mistake: a bug, reported as one
        _traceback(args)
        return _internal_error(e)
    except KeyboardInterrupt:
        print(
            "pyro-vae: interrupted; a run's last checkpoint is whole: continue it with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        distributed.shutdown(barrier=ok)  # after a failure the others may be gone


# The user's to act on: the library's own errors (settings, data, files, peers) and the operating
# system's (a file that cannot be read or written). Anything else is a bug of pyro_vae: a
# ValueError from torch is no more the user's than an AttributeError.
EXPECTED = (PyroVAEError, PeerFailure, OSError)
INTERNAL_ERROR = 3


def _traceback(args: argparse.Namespace) -> None:
    """With ``--debug``, the traceback of the exception being handled, before its one line."""
    if args.debug:
        traceback.print_exc()


def _report(e: PyroVAEError | PeerFailure | OSError) -> int:
    """One line for an expected failure; exit 1 for a run that diverged or lost a peer, else 2."""
    if isinstance(e, TrainingDiverged):
        print(f"pyro-vae: training diverged: {e}", file=sys.stderr)
        return 1
    message = str(e)
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in message:
        message += f": {e.filename}"
    print(f"pyro-vae: error: {message or type(e).__name__}", file=sys.stderr)
    return 1 if isinstance(e, PeerFailure) else 2


def _internal_error(e: BaseException) -> int:
    """One line saying that pyro_vae has a bug, and how to see where: exit 3."""
    lines = str(e).strip().splitlines()
    what = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    print(
        f"pyro-vae: internal error: {what}; please report it (--debug shows the traceback)",
        file=sys.stderr,
    )
    return INTERNAL_ERROR


def _train(args: argparse.Namespace) -> int:
    from pyro_vae.app.run import train_run

    if args.resume and args.overwrite:
        raise PyroVAEError("--resume and --overwrite exclude each other: continue the run, or replace it")
    cfg = config_from_args(args)
    train_run(cfg, args.out, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    return 0


# What an earlier `evaluate --output` file holds (it may be replaced by a rerun).
EVALUATE_OUTPUT_KEYS = ("split", "num_points", "log_likelihood")


def _evaluate(args: argparse.Namespace) -> int:
    from pyro_vae.app.run import evaluate_run
    from pyro_vae.io import atomic_write_json

    for flag in ("num_samples", "ais_steps", "ais_chains"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise PyroVAEError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.output:  # before the evaluation: it may take hours
        check_output_file(args.output, "--output", EVALUATE_OUTPUT_KEYS)
    if args.refine_steps:
        metrics = _evaluate_refined(args)
        if args.output:
            atomic_write_json(args.output, metrics)
        return 0
    ais = {"method": "ais", "ais_steps": args.ais_steps, "ais_chains": args.ais_chains}
    metrics = evaluate_run(
        args.run_dir,
        num_samples=args.num_samples,
        split=args.split,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        **(ais if args.method == "ais" else {}),
    )
    if args.output:
        atomic_write_json(args.output, metrics)
    return 0


def _evaluate_refined(args: argparse.Namespace) -> dict:
    """``pyro-vae evaluate --refine-steps N``: the amortized figures, then the refined ones beside them."""
    from pyro_vae.app.run import load_run, summary_line
    from pyro_vae.infer.refine import evaluate_refined

    if args.refine_steps < 0 or args.method == "ais":
        raise PyroVAEError(
            f"--refine-steps must be a positive integer, without --method ais; got {args.refine_steps}"
            + (" with --method ais" if args.method == "ais" else "")
        )
    cfg, vae, splits = load_run(args.run_dir, split=args.split, data_dir=args.data_dir)
    k = args.num_samples or cfg.eval.num_samples
    seed, chunk = cfg.train.seed, cfg.eval.chunk_size
    metrics = evaluate_refined(
        vae, splits, args.refine_steps, k, seed=seed, split=cfg.eval.split, chunk_size=chunk
    )
    metrics.pop("pointwise")
    metrics["split"] = cfg.eval.split
    print(summary_line(metrics, vae))
    print(
        f"refined {args.refine_steps} SVI steps per point: log p(x) {metrics['log_likelihood_refined']:.2f} "
        f"({metrics['refined_minus_amortized']:+.3f} ± {metrics['refined_minus_amortized_se']:.3f} paired), "
        f"ELBO {metrics['elbo_refined']:.2f} ({metrics['elbo_gain']:+.2f})"
    )
    return metrics


def _diagnose(args: argparse.Namespace) -> int:
    from pyro_vae.app.diagnose import diagnose_run

    options = {k: v for k, v in vars(args).items() if k in DIAGNOSE_OPTIONS}
    diagnose_run(args.run_dir, num_is_samples=args.is_samples, progress=not args.no_progress, **options)
    return 0


# diagnose's flags that are diagnose_run's arguments under the same name.
DIAGNOSE_OPTIONS = (
    "num_samples nuts_points nuts_chains nuts_warmup nuts_draws num_points split data_dir out seed"
).split()


def _compare(args: argparse.Namespace) -> int:
    """Run ``pyro-vae compare``; exit status 1 when a prior failed (the others are reported all the same)."""
    from pyro_vae.app.compare import compare_priors
    from pyro_vae.app.run import launched_by_torchrun

    if launched_by_torchrun():
        raise PyroVAEError(
            "compare trains the priors one after another in one process: run it without torchrun"
        )
    result = compare_priors(
        config_from_args(args),
        args.priors,
        args.out,
        normal_scales=args.normal_scales,
        progress=not args.no_progress,
        command=shlex.join(["pyro-vae", *args.argv]),
        overwrite=args.overwrite,
        guides=args.guides,
    )
    for r in result.failed:
        print(f"pyro-vae: {r.entry.setting} {r.entry.label} failed: {r.error}", file=sys.stderr)
    return 1 if result.failed else 0


def _select(args: argparse.Namespace) -> int:
    """Run ``pyro-vae select``: every candidate trained, the choice printed with its train flags."""
    from pyro_vae.app.run import build_vae, load_data

    cfg = config_from_args(args)
    splits = load_data(cfg)

    def build(latent_dim: int, hidden: tuple[int, ...]):
        return build_vae(cfg.replace("model", latent_dim=latent_dim, hidden=list(hidden)), splits)

    chosen = selection.select(
        splits,
        latent_dims=args.latent_dims,
        hidden=args.widths,
        build=build,
        progress=not args.no_progress,
        config=cfg.train,
    )
    for c in chosen.candidates:
        print(
            f"latent {c['latent_dim']:>3}  hidden {','.join(map(str, c['hidden'])) or 'linear':<12} "
            f"validation log p(x) {c['valid_log_likelihood']:.4f}  ({c['epochs']} epochs)"
        )
    hidden = ",".join(map(str, chosen.hidden)) or "linear"
    print(
        f"{chosen.summary().split(' (')[0]}; train it with: --latent-dim {chosen.latent_dim} --hidden {hidden}"
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    from pyro_vae.app.sample import sample_run

    for flag, value in (("-n", args.n), ("--num-samples", args.num_samples)):
        if value < 1:
            raise PyroVAEError(f"{flag} must be a positive integer, got {value}")
    sample_run(args.run, args.n, args.out, given=args.given, num_samples=args.num_samples, seed=args.seed)
    return 0


COMMANDS = {
    "train": _train,
    "select": _select,
    "compare": _compare,
    "evaluate": _evaluate,
    "diagnose": _diagnose,
    "sample": _sample,
}


def console_main() -> None:
    """Entry point of ``pyro-vae`` and ``python -m pyro_vae``.

    A process started by torchrun ends through :func:`pyro_vae.infer.distributed.exit_process`,
    which skips interpreter finalisation (see there why).
    """
    code = main()
    from pyro_vae.app.run import launched_by_torchrun
    from pyro_vae.infer import distributed

    if launched_by_torchrun():
        distributed.exit_process(code, barrier=False)  # main() already waited for the others
    sys.exit(code)


if __name__ == "__main__":
    console_main()
