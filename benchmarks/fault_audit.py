"""Fault audit: a few hundred bad inputs through the command line and the API, each in a fresh temporary directory.

Every case runs ``pyro_vae.app.cli.main`` in this process (the same error boundary as
``pyro-vae``) in a directory holding a copy of one small finished run (``run/``) and whatever
the case sets up. A case is reported when it

* raises out of ``main`` or prints a traceback (``traceback``),
* changes or removes a file that existed before (``changed``), or leaves new files behind
  other than a resumable ``.NAME.partial`` (``leftover``),
* fails with a message that is not one line ``pyro-vae: error: ...`` or that reads like an
  implementation's words rather than the library's (``unclear``: errno numbers, ``PosixPath(``,
  a constructor's ``missing 1 required``, torch's ``mat1``, ...),
* or succeeds although it was expected to fail (``accepted``).

The API cases (``api_cases``) must raise one of pyro_vae's own errors (``PyroVAEError``) with
a one-line message that says what to do; any other exception is a ``traceback`` finding.

Usage: ``python benchmarks/fault_audit.py [--only SUBSTRING] [--list] [--json FILE]``
(one thread; a full pass takes a few minutes). Writes only under a temporary directory,
and the report to ``--json`` when given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from pyro_vae import memory  # noqa: E402
from pyro_vae.app import cli  # noqa: E402

BASE = ["--epochs", "1", "--hidden", "8", "--eval-samples", "2", "--no-progress", "--num-threads", "1"]
QUICK_COMPARE = [
    "--quick",
    "--priors",
    "standard_normal",
    "--epochs",
    "1",
    "--no-progress",
    "--num-threads",
    "1",
]
DIAGNOSE = ["--no-progress", "--num-points", "5", "--num-samples", "10", "--nuts-points", "0"]
# Words of an implementation rather than of pyro_vae: a message holding one says what broke
# in someone else's terms, not what the user should do.
UNCLEAR = re.compile(
    r"\[Errno|PosixPath\(|missing \d+ required|unexpected keyword|has no attribute|mat1 and mat2|"
    r"can't convert|object is not|not subscriptable|NoneType\b(?!\))|Traceback|internal error|unexpected \w+Error|"
    r"weights_only=False|enforce fail|DefaultCPUAllocator|index out of range|invalid literal"
)
# A message says what to do: one of these words (a flag counts).
FIX = re.compile(
    r"--|\b(pass|use|choose|give|remove|lower|check|retrain|resume|convert|save|rename|restore|fix|start|"
    r"put|move|set|wait|reshape|drop|train|run|rebuild|replace|build|upgrade|load|leave|add|make|"
    r"name|pick|delete|free|rewrite|raise|split|list|must|needs?|one of|at least|at most|create|write|takes|rescale)\b",
    re.I,
)


@dataclass
class Case:
    name: str
    argv: list[str]
    setup: Callable[[Path], None] = lambda tmp: None
    should_fail: bool = True
    allowed_new: tuple[str, ...] = ()  # names that may appear (a resumable .partial, an --output file)


@dataclass
class Finding:
    case: str
    kind: str
    detail: str


@dataclass
class Report:
    cases: int = 0
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- setups


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir(parents=True, exist_ok=True)


def fifo(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        p = tmp / name
        p.unlink(missing_ok=True)
        os.mkfifo(p)

    return setup


def npy(name: str, array: np.ndarray, allow_pickle: bool = False) -> Callable[[Path], None]:
    return lambda tmp: np.save(tmp / name, array, allow_pickle=allow_pickle)


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        p = tmp / name
        d = json.loads(p.read_text())
        change(d)
        p.write_text(json.dumps(d))

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)

    return setup


def edit_state(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        p = tmp / name
        d = torch.load(p, weights_only=True)
        change(d)
        torch.save(d, p)

    return setup


def chmod(name: str, mode: int) -> Callable[[Path], None]:
    return lambda tmp: os.chmod(tmp / name, mode)


# ----------------------------------------------------------------------------- cases


def train(*flags: str, out: str = "new") -> list[str]:
    return ["train", "--out", out, *BASE, *flags]


BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e400", "abc", "", "1.5", "0x10", "1,2"]
INT_FLAGS = [
    "--epochs",
    "--batch-size",
    "--num-particles",
    "--eval-samples",
    "--latent-dim",
    "--num-threads",
    "--seed",
    "--data-seed",
    "--eval-chunk-size",
    "--valid-samples",
]
FLOAT_FLAGS = ["--lr", "--lr-factor", "--max-minutes", "--ddp-timeout-s", "--beta", "--warmup-epochs"]
CHOICE_FLAGS = {
    "--likelihood": "gausian",
    "--prior": "vampp",
    "--loss": "iwea",
    "--network": "mpl",
    "--activation": "rleu",
    "--eval-split": "tset",
    "--dataset": "digts",
    "--guide": "diagnal",
}
# Values that parse as numbers but that a setting refuses (or accepts: then not a fault).
VALID_NUMBER = {"0", "-1", "nan", "inf", "-inf", "1e400", "1.5"}


def flag_cases() -> list[Case]:
    cases = []
    for flag in INT_FLAGS + FLOAT_FLAGS:
        for value in BAD_NUMBERS:
            if flag == "--seed" and value == "0" or flag == "--data-seed" and value == "0":
                continue  # seed 0 is the default
            if flag in ("--beta", "--warmup-epochs") and value == "0":
                continue  # beta 0 and no warm-up are valid
            if flag in FLOAT_FLAGS and value == "1.5" and flag not in ("--lr-factor",):
                continue  # a valid number for these
            if flag in ("--beta",) and value in ("1.5",):
                continue
            cases.append(Case(f"flag {flag}={value!r}", train(flag, value)))
    for flag, typo in CHOICE_FLAGS.items():
        cases.append(Case(f"typo {flag} {typo}", train(flag, typo)))
    # (--latent and --num-particle are argparse's unambiguous abbreviations of --latent-dim and
    # --num-particles: accepted, not faults)
    for typo in ["--epcohs", "--lrr", "--hiden", "--outt", "--overwite", "--seeed", "--no-progres"]:
        cases.append(Case(f"unknown flag {typo}", train(typo, "3")))
    cases += [
        Case("flag --seed 1e23", train("--seed", "100000000000000000000000")),
        Case("flag --data-seed 1e23", train("--data-seed", "100000000000000000000000")),
        Case("diagnose seed 1e23", ["diagnose", "run", *DIAGNOSE, "--seed", "100000000000000000000000"]),
        Case("flag --hidden 0,8", train("--hidden", "0,8")),
        Case("flag --hidden -8", train("--hidden", "-8")),
        Case("flag --hidden 8,,8", train("--hidden", "8,,8")),
        Case("flag --hidden 1e9", train("--hidden", "1000000000")),
        Case("flag --latent-dim 1e9", train("--latent-dim", "1000000000")),
        Case("flag iwae x1e5", train("--loss", "iwae", "--num-particles", "100000")),
        Case("flag batch 1e12", train("--batch-size", "1000000000000")),
        Case("flag num-threads 1000", train("--num-threads", "1000")),
        Case("flag prior-options not json", train("--prior-options", "{nope")),
        Case("flag prior-options list", train("--prior-options", "[1,2]")),
        Case("flag prior-options unknown", train("--prior", "mixture", "--prior-options", '{"bogus": 1}')),
        Case(
            "flag prior-options bad value",
            train("--prior", "mixture", "--prior-options", '{"num_components": -3}'),
        ),
        Case("flag likelihood categorical", train("--likelihood", "categorical")),
        Case("flag likelihood-options auto", train("--likelihood-options", '{"min_scale": 0.1}')),
        Case("flag likelihood poisson on grey", train("--likelihood", "poisson")),
        Case("flag likelihood bernoulli on grey", train("--likelihood", "bernoulli")),
        Case("flag column-likelihoods no csv", train("--column-likelihoods", '{"a": "poisson"}')),
        Case("flag device tpu", train("--device", "tpu")),
        Case("flag device cuda:99", train("--device", "cuda:99")),
        Case("flag resume+overwrite", train("--resume", "--overwrite", out="run")),
        Case("flag nproc 0", ["train", "--out", "new", "--nproc", "0", *BASE]),
        Case("flag nproc -3", ["train", "--out", "new", "--nproc", "-3", *BASE]),
        Case("flag label-column on digits", train("--label-column", "3")),
        Case("flag dataset csv no path", train("--dataset", "csv")),
        Case("flag dataset npy no path", train("--dataset", "npy")),
        Case("flag mnist no data", train("--dataset", "binarized_mnist", "--data-dir", "/nonexistent")),
        Case("flag iwae 1 particle", train("--loss", "iwae", "--num-particles", "1")),
        Case("flag warmup no beta-start", train("--warmup-epochs", "-5")),
        Case("flag beta-start nan", train("--beta-start", "nan")),
        Case("flag patience without valid", train("--patience", "abc")),
        Case("no command", []),
        Case("bogus command", ["trian"]),
        Case("train --out missing value", ["train", "--out"]),
    ]
    return cases


def path_cases() -> list[Case]:
    good_rows = "".join(f"{i % 3}.5,{(i * 7) % 5}.25\n" for i in range(40))
    cases = [
        # --out
        Case("out is a file", train(out="afile"), write("afile", "x")),
        Case("out parent is a file", train(out="afile/sub"), write("afile", "x")),
        Case("out holds a run", train(out="run")),
        Case("out holds user files", train(out="mine"), write("mine/notes.txt", "mine")),
        Case("out is .", train(out=".")),
        Case("out is ..", train(out="..")),
        Case("out is /", train(out="/")),
        Case("out partial is a file", train(out="new"), write(".new.partial", "x")),
        Case("out old is a file", train(out="new"), write(".new.old", "x")),
        *(
            []
            if os.geteuid() == 0  # root writes anywhere: these two would succeed
            else [
                Case("out locked dir unwritable", train(out="ro/new"), both(mkdir("ro"), chmod("ro", 0o500))),
                Case(
                    "evaluate model.pt unreadable",
                    ["evaluate", "run", "--no-progress"],
                    chmod("run/model.pt", 0),
                ),
            ]
        ),
        Case(
            "out interrupted run",
            train(out="new"),
            lambda tmp: shutil.copytree(tmp / "run", tmp / ".new.partial"),
        ),
        Case("resume nothing", train("--resume", out="new")),
        Case("resume user files", train("--resume", out="mine"), write("mine/notes.txt", "mine")),
        # --config
        Case("config missing", train("--config", "nowhere.json")),
        Case("config dir without config", train("--config", "adir"), mkdir("adir")),
        Case("config invalid json", train("--config", "c.json"), write("c.json", "{nope")),
        Case("config not utf8", train("--config", "c.json"), write("c.json", b"\xff\xfe\x00{")),
        Case("config list", train("--config", "c.json"), write("c.json", "[1]")),
        Case("config string", train("--config", "c.json"), write("c.json", '"x"')),
        Case("config null", train("--config", "c.json"), write("c.json", "null")),
        Case("config empty", train("--config", "c.json"), write("c.json", "")),
        Case("config fifo", train("--config", "c.json"), fifo("c.json")),
        Case("config unknown section", train("--config", "c.json"), write("c.json", '{"trian": {}}')),
        Case("config section not object", train("--config", "c.json"), write("c.json", '{"train": 3}')),
        Case("config unknown key", train("--config", "c.json"), write("c.json", '{"train": {"epoch": 3}}')),
        Case(
            "config epochs string", train("--config", "c.json"), write("c.json", '{"train": {"epochs": "3"}}')
        ),
        Case(
            "config epochs bool", train("--config", "c.json"), write("c.json", '{"train": {"epochs": true}}')
        ),
        Case("config lr null", train("--config", "c.json"), write("c.json", '{"train": {"lr": null}}')),
        Case(
            "config hidden string", train("--config", "c.json"), write("c.json", '{"model": {"hidden": "8"}}')
        ),
        Case(
            "config hidden floats",
            train("--config", "c.json"),
            write("c.json", '{"model": {"hidden": [8.5]}}'),
        ),
        Case(
            "config prior typo", train("--config", "c.json"), write("c.json", '{"model": {"prior": "vampp"}}')
        ),
        Case(
            "config beta object bad",
            train("--config", "c.json"),
            write("c.json", '{"train": {"beta": {"ed": 1}}}'),
        ),
        Case(
            "config model.json of VAE.save", train("--config", "run/m.json"), lambda tmp: _model_config(tmp)
        ),
        Case(
            "config format_version 999",
            ["evaluate", "run", "--no-progress"],
            edit_json("run/config.json", lambda d: d.update(format_version=999)),
        ),
        Case(
            "config format_version string",
            ["evaluate", "run", "--no-progress"],
            edit_json("run/config.json", lambda d: d.update(format_version="1")),
        ),
        # data files
        Case("csv missing", train("--dataset", "csv", "--data-path", "no.csv")),
        Case("csv is dir", train("--dataset", "csv", "--data-path", "adir"), mkdir("adir")),
        Case("csv empty", train("--dataset", "csv", "--data-path", "e.csv"), write("e.csv", "")),
        Case("csv header only", train("--dataset", "csv", "--data-path", "h.csv"), write("h.csv", "a,b\n")),
        Case(
            "csv binary",
            train("--dataset", "csv", "--data-path", "b.csv"),
            write("b.csv", b"\x00\x01\x02" * 50),
        ),
        Case("csv fifo", train("--dataset", "csv", "--data-path", "f.csv"), fifo("f.csv")),
        Case(
            "csv ragged",
            train("--dataset", "csv", "--data-path", "r.csv"),
            write("r.csv", good_rows + "1,2,3,4\n"),
        ),
        Case(
            "csv label out of range",
            train("--dataset", "csv", "--data-path", "l.csv", "--label-column", "9"),
            write("l.csv", good_rows),
        ),
        Case(
            "csv label unknown name",
            train("--dataset", "csv", "--data-path", "l.csv", "--label-column", "nope"),
            write("l.csv", "a,b\n" + good_rows),
        ),
        Case("npy missing", train("--dataset", "npy", "--data-path", "no.npy")),
        Case("npy text", train("--dataset", "npy", "--data-path", "t.npy"), write("t.npy", "hello")),
        Case("npy 1-d", train("--dataset", "npy", "--data-path", "o.npy"), npy("o.npy", np.arange(5.0))),
        Case("npy empty", train("--dataset", "npy", "--data-path", "o.npy"), npy("o.npy", np.zeros((0, 3)))),
        Case(
            "npy complex",
            train("--dataset", "npy", "--data-path", "c.npy"),
            npy("c.npy", np.ones((30, 3)) + 1j),
        ),
        Case(
            "npy strings",
            train("--dataset", "npy", "--data-path", "s.npy"),
            npy("s.npy", np.array([["a"]] * 30)),
        ),
        Case(
            "npy objects",
            train("--dataset", "npy", "--data-path", "b.npy"),
            npy("b.npy", np.array([[1, "a"]] * 30, dtype=object), allow_pickle=True),
        ),
        Case(
            "npy npz",
            train("--dataset", "npy", "--data-path", "z.npz"),
            lambda tmp: np.savez(tmp / "z.npz", a=np.ones((30, 3))),
        ),
        Case(
            "npy all nan",
            train("--dataset", "npy", "--data-path", "n.npy"),
            npy("n.npy", np.full((30, 3), np.nan)),
        ),
        Case(
            "npy inf",
            train("--dataset", "npy", "--data-path", "i.npy"),
            npy("i.npy", np.full((30, 3), np.inf)),
        ),
        Case(
            "npy 5-d",
            train("--dataset", "npy", "--data-path", "d.npy"),
            npy("d.npy", np.ones((30, 1, 2, 2, 2))),
        ),
        Case(
            "npy two rows", train("--dataset", "npy", "--data-path", "t.npy"), npy("t.npy", np.ones((2, 3)))
        ),
        Case(
            "npy bool ok-ish",
            train("--dataset", "npy", "--data-path", "b.npy"),
            npy("b.npy", np.ones((1, 3)) > 0),
        ),
    ]
    return cases


def _model_config(tmp: Path) -> None:
    d = json.loads((tmp / "run" / "config.json").read_text())
    d.pop("run", None)
    (tmp / "run" / "m.json").write_text(json.dumps(d))


def run_cases() -> list[Case]:
    ev = ["evaluate", "run", "--no-progress"]
    dg = ["diagnose", "run", *DIAGNOSE]
    cases = [
        Case("evaluate missing dir", ["evaluate", "nowhere", "--no-progress"]),
        Case("evaluate a file", ["evaluate", "afile", "--no-progress"], write("afile", "x")),
        Case("evaluate empty dir", ["evaluate", "adir", "--no-progress"], mkdir("adir")),
        Case("evaluate K 0", [*ev, "--num-samples", "0"]),
        Case("evaluate K -5", [*ev, "--num-samples", "-5"]),
        Case("evaluate K abc", [*ev, "--num-samples", "abc"]),
        Case("evaluate ais steps 0", [*ev, "--method", "ais", "--ais-steps", "0"]),
        Case("evaluate ais chains -1", [*ev, "--method", "ais", "--ais-chains", "-1"]),
        Case(
            "evaluate ais chains 1e8",
            [*ev, "--method", "ais", "--ais-chains", "100000000", "--ais-steps", "2"],
        ),
        Case("evaluate method typo", [*ev, "--method", "as"]),
        Case("evaluate split typo", [*ev, "--split", "tst"]),
        Case("evaluate output is dir", [*ev, "--output", "adir"], mkdir("adir")),
        Case("evaluate output into the run", [*ev, "--output", "run/config.json"]),
        Case("evaluate output new file in the run", [*ev, "--output", "run/m.json"]),
        Case("evaluate output over a user file", [*ev, "--output", "notes.txt"], write("notes.txt", "mine")),
        Case("evaluate output over a user json", [*ev, "--output", "n.json"], write("n.json", '{"a": 1}')),
        Case("evaluate output parent missing", [*ev, "--output", "no/such/m.json"]),
        Case("evaluate output parent file", [*ev, "--output", "afile/m.json"], write("afile", "x")),
        Case("evaluate data-dir missing", [*ev, "--data-dir", "/nonexistent"], should_fail=False),
        Case("evaluate model fifo", ev, fifo("run/model.pt")),
        Case(
            "evaluate model dir", ev, both(lambda t: (t / "run" / "model.pt").unlink(), mkdir("run/model.pt"))
        ),
        Case("evaluate model missing", ev, lambda t: (t / "run" / "model.pt").unlink()),
        Case("evaluate config missing", ev, lambda t: (t / "run" / "config.json").unlink()),
        Case("evaluate config no model", ev, edit_json("run/config.json", lambda d: d.pop("model"))),
        Case("evaluate config no run", ev, edit_json("run/config.json", lambda d: d.pop("run"))),
        Case("evaluate config model list", ev, edit_json("run/config.json", lambda d: d.update(model=[1]))),
        Case(
            "evaluate config latent string",
            ev,
            edit_json("run/config.json", lambda d: d["model"].update(latent_dim="8")),
        ),
        Case(
            "evaluate config unknown likelihood",
            ev,
            edit_json(
                "run/config.json", lambda d: d["model"].update(likelihood={"name": "gausian", "options": {}})
            ),
        ),
        Case("evaluate state dict list", ev, lambda t: torch.save([1, 2], t / "run" / "model.pt")),
        Case("evaluate state dict tensor", ev, lambda t: torch.save(torch.zeros(3), t / "run" / "model.pt")),
        Case("evaluate state dict empty", ev, lambda t: torch.save({}, t / "run" / "model.pt")),
        Case("evaluate model.pt is text", ev, write("run/model.pt", "not a checkpoint")),
        Case("evaluate zip bomb-ish", ev, write("run/model.pt", b"PK\x03\x04" + b"\x00" * 100)),
        Case("diagnose num-points 0", [*dg, "--num-points", "0"]),
        Case("diagnose num-samples 0", [*dg, "--num-samples", "0"]),
        Case("diagnose nuts-chains 0", [*dg, "--nuts-chains", "0", "--nuts-points", "1"]),
        Case("diagnose nuts-draws -1", [*dg, "--nuts-draws", "-1", "--nuts-points", "1"]),
        Case("diagnose out is file", [*dg, "--out", "afile"], write("afile", "x")),
        Case("diagnose missing run", ["diagnose", "nowhere", *DIAGNOSE]),
        Case("diagnose split typo", [*dg, "--split", "tst"]),
        Case("diagnose seed -1", [*dg, "--seed", "-1"]),
        Case("diagnose is-samples 0", [*dg, "--is-samples", "0", "--nuts-points", "1"]),
        # resume with damaged or foreign state
        Case(
            "resume state missing",
            train("--resume", out="run"),
            lambda t: (t / "run" / "training_state.pt").unlink(),
        ),
        Case("resume state text", train("--resume", out="run"), write("run/training_state.pt", "x")),
        Case("resume state fifo", train("--resume", out="run"), fifo("run/training_state.pt")),
        Case(
            "resume state foreign keys",
            train("--resume", out="run"),
            lambda t: torch.save({"model": {}}, t / "run" / "training_state.pt"),
        ),
        Case(
            "resume state wrong shapes",
            train("--resume", out="run"),
            edit_state(
                "run/training_state.pt",
                lambda d: d.update(model={k: torch.zeros(3, 3) for k in d["model"]}),
            ),
        ),
        Case(
            "resume state format 1",
            train("--resume", out="run"),
            edit_state("run/training_state.pt", lambda d: d.update(format=1)),
        ),
        Case(
            "resume state nan",
            train("--resume", out="run"),
            edit_state(
                "run/training_state.pt",
                lambda d: d.update(model={k: v * float("nan") for k, v in d["model"].items()}),
            ),
        ),
        Case(
            "resume config gone", train("--resume", out="run"), lambda t: (t / "run" / "config.json").unlink()
        ),
        # compare
        Case("compare into a run", ["compare", "--out", "run", *QUICK_COMPARE]),
        Case(
            "compare into user files", ["compare", "--out", "mine", *QUICK_COMPARE], write("mine/a.txt", "a")
        ),
        Case("compare prior typo", ["compare", "--out", "c", *QUICK_COMPARE[:1], "--priors", "vampp"]),
        Case("compare priors empty", ["compare", "--out", "c", "--quick", "--priors", ","]),
        Case("compare prior twice", ["compare", "--out", "c", "--quick", "--priors", "laplace,laplace"]),
        Case("compare scales bad", ["compare", "--out", "c", "--quick", "--normal-scales", "-1"]),
        Case("compare scales text", ["compare", "--out", "c", "--quick", "--normal-scales", "a"]),
        Case(
            "compare scales without normal",
            ["compare", "--out", "c", "--quick", "--priors", "laplace", "--normal-scales", "2"],
        ),
        Case("compare out is a file", ["compare", "--out", "afile", *QUICK_COMPARE], write("afile", "x")),
        Case("compare lr 0", ["compare", "--out", "c", *QUICK_COMPARE, "--lr", "0"]),
        Case("compare unknown flag", ["compare", "--out", "c", *QUICK_COMPARE, "--prior-option", "{}"]),
        # select
        Case("select latent dims 0", ["select", "--latent-dims", "0", "--no-progress"]),
        Case("select latent dims text", ["select", "--latent-dims", "a", "--no-progress"]),
        Case("select widths text", ["select", "--widths", "a;b", "--no-progress"]),
    ]
    return cases


def all_cases() -> list[Case]:
    return flag_cases() + path_cases() + run_cases()


# ----------------------------------------------------------------------------- the Python API


def _vae(**kw):
    from pyro_vae import VAE

    return VAE(**{"input_dim": 4, "latent_dim": 2, "hidden": (8,), "likelihood": "gaussian", **kw})


def _x(n: int = 32, d: int = 4) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(0))


def _fit(vae=None, data=None, *args, **kw):
    from pyro_vae import fit

    return fit(
        _vae() if vae is None else vae,
        _x() if data is None else data,
        *args,
        progress=False,
        **{"epochs": 1, **kw},
    )


def _trained(**kw):
    vae = _vae(**kw)
    _fit(vae)
    return vae


def _nan_weights(vae):
    with torch.no_grad():
        for p in vae.parameters():
            p.fill_(float("nan"))
    return vae


def api_cases() -> dict[str, Callable[[], object]]:
    """Calls that must raise one of pyro_vae's own errors with a clear one-line message."""
    from pyro_vae import VAE, evaluate
    from pyro_vae.distributions import likelihoods, priors

    nan_row = torch.tensor([[float("nan"), 0.5, 0.5, 0.5]])
    return {
        "VAE input_dim 0": lambda: VAE(0, 2),
        "VAE input_dim str": lambda: VAE("a", 2),
        "VAE hidden str": lambda: _vae(hidden="8"),
        "VAE likelihood int": lambda: _vae(likelihood=3),
        "VAE conv on 4 features": lambda: _vae(network="conv"),
        "VAE network typo": lambda: _vae(network="mpl"),
        "VAE activation typo": lambda: _vae(activation="rleu"),
        "VAE prior option str": lambda: _vae(prior={"name": "mixture", "options": {"num_components": "3"}}),
        "VAE latent 1e9 (meta check)": lambda: memory.check_model_size(
            lambda: VAE(64, 10**9, likelihood="gaussian")
        ),
        "likelihood categorical no option": lambda: likelihoods.create("categorical"),
        "likelihood negative scale": lambda: likelihoods.create("gaussian", min_scale=-1),
        "prior typo": lambda: priors.create("vampp"),
        "prior class not instance": lambda: priors.create(priors.REGISTRY.get("vamp")),
        "fit epochs 0": lambda: _fit(epochs=0),
        "fit cuda absent": lambda: _fit(device="cuda") if not torch.cuda.is_available() else _fit(epochs=0),
        "fit beta -1": lambda: _fit(beta=-1),
        "fit loss typo": lambda: _fit(loss="iwea"),
        "fit valid wrong width": lambda: _fit(None, None, _x(3, 5)),
        "fit generator": lambda: _fit(None, (r for r in _x())),
        "fit dict": lambda: _fit(None, {"x": _x()}),
        "fit 3-d for mlp": lambda: _fit(None, torch.rand(32, 2, 2)),
        "fit 1e300": lambda: _fit(None, np.full((32, 4), 1e300)),
        "fit complex": lambda: _fit(None, np.ones((32, 4)) + 1j),
        "fit objects": lambda: _fit(None, np.array([[1, "a", None, 2]] * 32, dtype=object)),
        "fit text": lambda: _fit(None, np.array([["1", "2", "3", "4"]] * 32)),
        "fit empty": lambda: _fit(None, torch.empty(0, 4)),
        "fit bernoulli on grey": lambda: _fit(_vae(likelihood="bernoulli")),
        "fit poisson on negatives": lambda: _fit(_vae(likelihood="poisson"), _x() - 1),
        "fit iwae 1e10 particles": lambda: _fit(loss="iwae", num_particles=10**10),
        "fit resume without dir": lambda: _fit(resume=True),
        "evaluate chunk 0": lambda: evaluate(_trained(), _x(), 10, chunk_size=0),
        "evaluate method typo": lambda: evaluate(_trained(), _x(), 10, method="bogus"),
        "evaluate untrained auto": lambda: evaluate(VAE(4, 2), _x(), 10),
        "evaluate NaN weights": lambda: evaluate(_nan_weights(_trained()), _x(), 10),
        "evaluate empty": lambda: evaluate(_trained(), torch.empty(0, 4), 10),
        "sample 2.5": lambda: _vae().sample(2.5),
        "sample 1e12": lambda: _vae().sample(10**12),
        "decode wrong width": lambda: _vae().decode(torch.rand(3, 5)),
        "decode str": lambda: _vae().decode("z"),
        "encode int tensor": lambda: _vae().encode(torch.ones(3, 4, dtype=torch.int64)),
        "encode numpy": lambda: _vae().reconstruct(np.random.rand(3, 4)),
        "impute without missing": lambda: _trained().impute(nan_row),
        "impute NaN weights": lambda: _nan_weights(_trained(missing=True)).impute(nan_row),
        "impute K 0": lambda: _vae(missing=True).impute(nan_row, 0),
        "log_weights K 0": lambda: _vae().log_weights(_x(), 0),
        "load a missing directory": lambda: VAE.load("nowhere"),
    }


def run_api_case(name: str, call: Callable[[], object], scratch: Path) -> list[Finding]:
    from pyro_vae.errors import PyroVAEError

    tmp = Path(tempfile.mkdtemp(dir=scratch))
    old_cwd = os.getcwd()
    os.chdir(tmp)
    try:
        call()
    except PyroVAEError as e:
        text = str(e)
        if "\n" in text.strip() or UNCLEAR.search(text):
            return [Finding(name, "unclear", text[:300])]
        if not FIX.search(text):
            return [Finding(name, "unclear", f"says nothing to do: {text[:300]}")]
        return []
    except Exception as e:  # noqa: BLE001 (an error that is not pyro_vae's own is the finding)
        return [Finding(name, "traceback", f"{type(e).__name__}: {str(e)[:300]}")]
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    return [Finding(name, "accepted", "no error")]


# ----------------------------------------------------------------------------- running


def snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = Path(dirpath, f)
            try:
                out[os.path.relpath(p, root)] = p.read_bytes() if p.is_file() else b"<special>"
            except OSError:
                out[os.path.relpath(p, root)] = b"<unreadable>"
    return out


def run_case(case: Case, finished: Path, scratch: Path) -> list[Finding]:
    tmp = Path(tempfile.mkdtemp(dir=scratch))
    work = tmp / "w"
    work.mkdir()
    shutil.copytree(finished, work / "run")
    case.setup(work)
    before = snapshot(tmp)
    old_cwd = os.getcwd()
    os.chdir(work)
    err, out = io.StringIO(), io.StringIO()
    findings: list[Finding] = []
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli.main(case.argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException as e:  # noqa: BLE001 (a case that escapes main is the finding)
                findings.append(Finding(case.name, "traceback", f"{type(e).__name__}: {e}"))
                code = None
    finally:
        os.chdir(old_cwd)
    message = err.getvalue()
    findings += _judge(case, code, message)
    after = snapshot(tmp)
    changed = [p for p, b in before.items() if after.get(p, "gone") != b and not p.startswith("w/..")]
    if changed:
        findings.append(Finding(case.name, "changed", ", ".join(sorted(changed)[:5])))
    new = [p for p in set(after) - set(before) if not _allowed(p, case)]
    if new and (code != 0):
        findings.append(Finding(case.name, "leftover", ", ".join(sorted(new)[:5])))
    _unlock(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return findings


def _allowed(path: str, case: Case) -> bool:
    top = path.split(os.sep)[1] if os.sep in path else path
    return top.endswith(".partial") or top in case.allowed_new


def _judge(case: Case, code: int | None, message: str) -> list[Finding]:
    if code is None:
        return []
    if code == 0:
        return [Finding(case.name, "accepted", "exit 0")] if case.should_fail else []
    lines = [line for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("pyro-vae: error: ")]
    if "Traceback" in message:
        return [Finding(case.name, "traceback", message.strip()[-300:])]
    if len(errors) != 1:
        return [Finding(case.name, "unclear", f"not one error line: {message.strip()[:300]!r}")]
    text = errors[0]
    if UNCLEAR.search(text):
        return [Finding(case.name, "unclear", text[:300])]
    if not FIX.search(text.removeprefix("pyro-vae: error: ")):
        return [Finding(case.name, "unclear", f"says nothing to do: {text[:300]}")]
    return []


def _unlock(root: Path) -> None:
    """Give back permissions a case took away, so its directory can be removed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    os.chmod(p, 0o700)


def finished_run(scratch: Path) -> Path:
    out = scratch / "finished" / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", "--out", str(out), *BASE])
    if code != 0:
        raise SystemExit("fault_audit: the small finished run could not be trained")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose name holds this")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if args.only is None or args.only in c.name]
    calls = {n: c for n, c in api_cases().items() if args.only is None or args.only in f"api: {n}"}
    if args.list:
        for name in [c.name for c in cases] + [f"api: {n}" for n in calls]:
            print(name)
        return 0
    report = Report()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault_audit_") as scratch:
        finished = finished_run(Path(scratch))
        for case in cases:
            report.findings += run_case(case, finished, Path(scratch))
            report.cases += 1
        for name, call in calls.items():
            report.findings += run_api_case(f"api: {name}", call, Path(scratch))
            report.cases += 1
    report.seconds = time.perf_counter() - start
    kinds: dict[str, int] = {}
    for f in report.findings:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
        print(f"{f.kind:9} {f.case}: {f.detail}")
    print(
        f"{report.cases} cases in {report.seconds:.0f} s: "
        + (", ".join(f"{n} {k}" for k, n in kinds.items()) or "no findings")
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cases": report.cases,
                    "seconds": report.seconds,
                    "findings": [f.__dict__ for f in report.findings],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
