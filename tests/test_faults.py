"""Bad inputs and faults, through the command line and the API: each one is refused with a
clear message, a non-zero exit (or the documented exception), no traceback, and no file
that existed before changed (a fresh ``--out`` is not even created).

The command line runs in this process (``pyro_vae.app.cli.main``, the same error boundary as
``python -m pyro_vae``) so that 80 cases stay cheap; ``test_cli_subprocess_boundary`` runs a
few of them as real processes.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import VAE, fit
from pyro_vae.app import cli
from pyro_vae.data import read_csv
from pyro_vae.distributions import likelihoods, priors
from pyro_vae.errors import ConfigError, DataError, PyroVAEError, RunDirectoryError
from pyro_vae.infer.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--epochs", "2", "--hidden", "16", "--eval-samples", "5", "--no-progress", "--num-threads", "1"]
NEW = "new"  # a fresh --out under the test's directory
RUN = "run"  # a copy of the module's finished run


# ----------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (path -> bytes) and directory (path -> None) under ``root``, hidden ones too."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = Path(dirpath, f)
            # a FIFO is not read: that would wait for a writer
            out[os.path.relpath(p, root)] = p.read_bytes() if p.is_file() else b"<not a regular file>"
    return out


def run_cli(argv: list, capsys) -> tuple[int, str]:
    """``pyro-vae ARGV`` in this process (paths may stand as they are): its exit status and stderr."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One small finished run, trained once per module; tests copy it."""
    root = tmp_path_factory.mktemp("shared")
    code = cli.main(["train", "--out", str(root / RUN), *SMALL])
    assert code == 0
    return root / RUN


class Evil:
    """A pickle that would create ``marker`` when unpickled with weights_only=False."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


# ----------------------------------------------------------------------------- damage


def _model(run: Path) -> Path:
    return run / "model.pt"


def truncate(run: Path) -> None:
    p = _model(run)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def empty(run: Path) -> None:
    _model(run).write_bytes(b"")


def random_bytes(run: Path) -> None:
    _model(run).write_bytes(np.random.default_rng(0).bytes(4096))


def hostile(run: Path) -> None:
    torch.save({"state_dict": Evil(str(run.parent / "PWNED"))}, _model(run))


def _rewrite_state(run: Path, change) -> None:
    obj = torch.load(_model(run), weights_only=True)
    state = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    for k in list(state):
        state[k] = change(k, state[k])
    torch.save(obj, _model(run))


def nan_weights(run: Path) -> None:
    _rewrite_state(run, lambda k, v: torch.full_like(v, float("nan")) if v.is_floating_point() else v)


def wrong_shapes(run: Path) -> None:
    _rewrite_state(run, lambda k, v: torch.zeros(*(s + 1 for s in v.shape)) if v.dim() else v)


def config_invalid_json(run: Path) -> None:
    (run / "config.json").write_text('{"model": {"latent_dim": 8,')


def config_without_model(run: Path) -> None:
    d = json.loads((run / "config.json").read_text())
    d.pop("model")
    (run / "config.json").write_text(json.dumps(d))


def state_truncated(run: Path) -> None:
    p = run / "training_state.pt"
    p.write_bytes(p.read_bytes()[:1000])


def remove_run(run: Path) -> None:
    shutil.rmtree(run)


DAMAGE = {
    "model-truncated": (truncate, r"model\.pt is damaged"),
    "model-empty": (empty, r"model\.pt.*empty|empty.*model\.pt"),
    "model-random-bytes": (random_bytes, r"model\.pt is damaged"),
    "model-hostile-pickle": (hostile, r"model\.pt holds Python objects other than tensors"),
    "model-nan": (nan_weights, r"model\.pt.*(NaN|non-finite|finite)"),
    "model-wrong-shapes": (wrong_shapes, r"model\.pt.*(shape|size)"),
    "config-invalid-json": (config_invalid_json, r"config\.json.*(JSON|json)"),
    "config-without-model": (config_without_model, r"config\.json.*model"),
    "run-missing": (remove_run, r"run does not exist|nothing to resume in run"),
}


# ----------------------------------------------------------------------------- setups


def write(name: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    return setup


def config(obj) -> Callable[[Path], None]:
    return write("cfg.json", json.dumps(obj))


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


def partial_run(tmp: Path) -> None:
    shutil.copytree(tmp / RUN, tmp / f".{NEW}.partial")


def nothing(tmp: Path) -> None:
    pass


def damaged(fn) -> Callable[[Path], None]:
    return lambda tmp: fn(tmp / RUN)


CSV_GOOD_ROWS = "".join(f"{i % 3}.5,{i % 5}.25\n" for i in range(40))


@dataclass
class Case:
    argv: list[str]
    pattern: str
    setup: Callable[[Path], None] = nothing
    new_ok: set[str] = field(default_factory=set)  # files allowed to appear (none by default)


def train(*flags: str, out: str = NEW) -> list[str]:
    return ["train", "--out", out, *SMALL, *flags]


def csv_train(path: str, *flags: str) -> list[str]:
    return train("--dataset", "csv", "--data-path", path, *flags)


CLI_CASES = {
    # --- flags
    "lr-0": Case(train("--lr", "0"), r"train\.lr must be a positive number"),
    "lr-negative": Case(train("--lr", "-1"), r"train\.lr must be a positive number"),
    "lr-nan": Case(train("--lr", "nan"), r"train\.lr must be a positive number"),
    "epochs-0": Case(train("--epochs", "0"), r"train\.epochs must be at least 1"),
    "epochs-2.5": Case(train("--epochs", "2.5"), r"--epochs.*invalid int value: '2\.5'"),
    "batch-size-0": Case(train("--batch-size", "0"), r"train\.batch_size must be at least 1"),
    "eval-samples-0": Case(train("--eval-samples", "0"), r"eval\.num_samples must be at least 1"),
    "eval-split-bogus": Case(train("--eval-split", "bogus"), r"eval\.split must be one of.*'bogus'"),
    "likelihood-nope": Case(train("--likelihood", "nope"), r"model\.likelihood must be one of.*'nope'"),
    "prior-nope": Case(train("--prior", "nope"), r"model\.prior must be one of.*'nope'"),
    "loss-mse": Case(train("--loss", "mse"), r"train\.loss must be one of.*'mse'"),
    "iwae-one-particle": Case(
        train("--loss", "iwae", "--num-particles", "1"), r"iwae.*particle|particle.*iwae"
    ),
    "num-particles-0": Case(train("--num-particles", "0"), r"train\.num_particles must be at least 1"),
    "hidden-0": Case(train("--hidden", "0"), r"model\.hidden widths must be positive"),
    "hidden-letters": Case(train("--hidden", "a,b"), r"--hidden.*comma-separated widths.*'a,b'"),
    "latent-dim-0": Case(train("--latent-dim", "0"), r"model\.latent_dim must be at least 1"),
    "mixture-0-components": Case(
        train("--prior", "mixture", "--prior-options", '{"num_components": 0}'), r"num_components"
    ),
    "likelihood-options-list": Case(
        train("--likelihood-options", "[1]"), r"--likelihood-options.*JSON object"
    ),
    "likelihood-options-unknown": Case(
        train("--likelihood", "gaussian", "--likelihood-options", '{"bogus": 1}'), r"model\.likelihood.*bogus"
    ),
    "device-tpu": Case(train("--device", "tpu"), r"train\.device must be cpu, cuda"),
    "csv-without-path": Case(train("--dataset", "csv"), r"needs data\.path.*--data-path"),
    "csv-missing-file": Case(csv_train("missing.csv"), r"missing\.csv"),
    "csv-path-is-dir": Case(csv_train("adir"), r"no CSV file at adir", setup=mkdir("adir")),
    # A text cell makes its column categorical and "nan" is a missing cell (raw tables):
    # these are no longer faults. An infinite cell and a column of nothing but gaps are.
    "csv-inf": Case(
        csv_train("i.csv"), r"i\.csv|infinite", setup=write("i.csv", CSV_GOOD_ROWS + "1.0,inf\n")
    ),
    "csv-header-only": Case(
        csv_train("h.csv"), r"h\.csv.*(no data|empty|no rows)", setup=write("h.csv", "a,b\n")
    ),
    "csv-1e300": Case(
        csv_train("big.csv"),
        r"1e\+300 do not fit in float32",
        # a column of many values (few distinct values would make 1e300 just another level)
        setup=write("big.csv", "".join(f"{i % 3}.5,{0.37 * i:.2f}\n" for i in range(40)) + "1.0,1e300\n"),
    ),
    "csv-empty": Case(csv_train("e.csv"), r"e\.csv.* empty", setup=write("e.csv", "")),
    "csv-label-column-out-of-range": Case(
        csv_train("two.csv", "--label-column", "5"),
        r"label.*5|5.*label",
        setup=write("two.csv", CSV_GOOD_ROWS),
    ),
    "mnist-missing-data-dir": Case(
        train("--dataset", "binarized_mnist", "--data-dir", "/nonexistent"), r"/nonexistent"
    ),
    "bernoulli-on-grey-digits": Case(train("--likelihood", "bernoulli"), r"--likelihood"),
    "max-minutes-negative": Case(
        train("--max-minutes", "-1"), r"train\.max_minutes must be a positive number"
    ),
    "num-threads-0": Case(train("--num-threads", "0"), r"train\.num_threads must be at least 1"),
    "resume-nothing": Case(train("--resume"), r"nothing to resume in new"),
    "resume-and-overwrite": Case(
        train("--resume", "--overwrite", out=RUN), r"--resume and --overwrite exclude"
    ),
    # --- config files
    "config-invalid-json": Case(
        train("--config", "cfg.json"), r"cfg\.json", setup=write("cfg.json", "{nope")
    ),
    "config-json-list": Case(
        train("--config", "cfg.json"), r"cfg\.json.*(object|list)", setup=config([1, 2])
    ),
    "config-unknown-section": Case(
        train("--config", "cfg.json"), r"unknown section.*'trian'", setup=config({"trian": {}})
    ),
    "config-unknown-key": Case(
        train("--config", "cfg.json"),
        r"unknown setting.*'epoch'.*train",
        setup=config({"train": {"epoch": 2}}),
    ),
    "config-standardize-string": Case(
        train("--config", "cfg.json"),
        r"data\.standardize must be true or false( or null)?, got 'false'",
        setup=config({"data": {"standardize": "false"}}),
    ),
    "config-epochs-string": Case(
        train("--config", "cfg.json"),
        r"train\.epochs must be an integer, got '2'",
        setup=config({"train": {"epochs": "2"}}),
    ),
    "config-batch-size-float": Case(
        train("--config", "cfg.json"),
        r"train\.batch_size must be an integer or null, got 64\.5",
        setup=config({"train": {"batch_size": 64.5}}),
    ),
    "config-chunk-size-0": Case(
        train("--config", "cfg.json"),
        r"eval\.chunk_size must be at least 1",
        setup=config({"eval": {"chunk_size": 0}}),
    ),
    "config-eval-split-bogus": Case(
        train("--config", "cfg.json"),
        r"eval\.split must be one of",
        setup=config({"eval": {"split": "bogus"}}),
    ),
    "config-beta-string": Case(
        train("--config", "cfg.json"), r"train\.beta.*'x'", setup=config({"train": {"beta": "x"}})
    ),
    "config-missing-file": Case(train("--config", "nowhere.json"), r"nowhere\.json"),
    "config-is-directory": Case(train("--config", "cfgdir"), r"cfgdir", setup=mkdir("cfgdir")),
    # --- the output location
    "out-is-a-file": Case(train(out="afile"), r"--out afile is a file", setup=write("afile", "x")),
    "out-parent-is-a-file": Case(
        train(out="afile/sub"), r"cannot create afile/sub: afile is a file", setup=write("afile", "x")
    ),
    "out-holds-a-run": Case(train(out=RUN), r"run already holds a run.*--overwrite"),
    "out-holds-a-run-bad-lr": Case(train("--lr", "0", out=RUN), r"train\.lr must be a positive number"),
    "overwrite-bad-lr": Case(
        train("--overwrite", "--lr", "0", out=RUN), r"train\.lr must be a positive number"
    ),
    "interrupted-without-resume": Case(train(), r"interrupted run of new.*--resume", setup=partial_run),
    # --- evaluate
    "evaluate-num-samples-0": Case(
        ["evaluate", RUN, "--num-samples", "0", "--no-progress"], r"--num-samples"
    ),
    "evaluate-split-bogus": Case(["evaluate", RUN, "--split", "bogus", "--no-progress"], r"--split.*'bogus'"),
    "diagnose-seed-negative": Case(
        ["diagnose", RUN, "--no-progress", "--seed", "-1", "--nuts-points", "0"],
        r"--seed must be an integer >= 0",
    ),
    "npy-not-npy": Case(
        train("--dataset", "npy", "--data-path", "t.npy"),
        r"t\.npy cannot be read as a \.npy array of numbers",
        setup=write("t.npy", "a,b\n1,2\n"),
    ),
    # --- train --resume from a damaged training state
    "resume-state-truncated": Case(
        train("--resume", out=RUN), r"training_state\.pt", setup=damaged(state_truncated)
    ),
}


def fifo(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).unlink(missing_ok=True)
        os.mkfifo(tmp / name)

    return setup


def npy(name: str, array: np.ndarray, allow_pickle: bool = False) -> Callable[[Path], None]:
    return lambda tmp: np.save(tmp / name, array, allow_pickle=allow_pickle)


def format_999(run: Path) -> None:
    d = json.loads((run / "config.json").read_text())
    d["format_version"] = 999
    (run / "config.json").write_text(json.dumps(d))


def model_config_only(tmp: Path) -> None:
    d = json.loads((tmp / RUN / "config.json").read_text())
    d.pop("run")
    (tmp / "model.json").write_text(json.dumps(d))


def npy_train(path: str) -> list[str]:
    return train("--dataset", "npy", "--data-path", path)


QUICK_COMPARE = ["--quick", "--priors", "standard_normal", "--epochs", "1", "--no-progress"]

# Issue 25's cases and those found by trying (benchmarks/fault_audit.py runs a few hundred).
CLI_CASES.update(
    {
        # --- typos: "did you mean" for flags and for registered names, on the command line and in files
        "flag-typo-epcohs": Case(
            train("--epcohs", "3"), r"unrecognized arguments: --epcohs 3\. --epcohs: did you mean '--epochs'"
        ),
        "flag-typo-hiden": Case(train("--hiden", "8"), r"--hiden: did you mean '--hidden'"),
        "flag-typo-overwite": Case(train("--overwite"), r"--overwite: did you mean '--overwrite'"),
        "likelihood-typo": Case(
            train("--likelihood", "gausian"), r"got 'gausian'\. Did you mean 'gaussian'\?"
        ),
        "prior-typo": Case(train("--prior", "vampp"), r"got 'vampp'\. Did you mean 'vamp'\?"),
        "loss-typo": Case(train("--loss", "iwea"), r"Did you mean 'iwae'\?"),
        "network-typo": Case(train("--network", "mpl"), r"Did you mean 'mlp'\?"),
        "eval-split-typo": Case(train("--eval-split", "tset"), r"Did you mean 'test'\?"),
        "compare-priors-typo": Case(
            ["compare", "--out", NEW, "--quick", "--priors", "vampp"], r"Did you mean 'vamp'\?"
        ),
        "config-prior-typo": Case(
            train("--config", "cfg.json"),
            r"cfg\.json.*Did you mean 'vamp'\?",
            setup=config({"model": {"prior": "vampp"}}),
        ),
        "config-hidden-string": Case(
            train("--config", "cfg.json"),
            r"model\.hidden must be a list of integers or null",
            setup=config({"model": {"hidden": "8"}}),
        ),
        # --- options a plug-in needs, settings a data set does not read
        "likelihood-categorical": Case(
            train("--likelihood", "categorical"),
            r"likelihood 'categorical' needs the option\(s\) num_categories.*--likelihood-options",
        ),
        "likelihood-options-with-auto": Case(
            train("--likelihood-options", '{"min_scale": 0.1}'), r"--likelihood-options.*--likelihood NAME"
        ),
        "label-column-on-digits": Case(train("--label-column", "3"), r"data\.label_column.*--dataset csv"),
        "data-path-on-digits": Case(
            train("--data-path", "x.csv"), r"data\.path \(--data-path\).*--dataset csv"
        ),
        "mnist-data-dir-says-how": Case(
            train("--dataset", "binarized_mnist", "--data-dir", "/nonexistent"),
            r"/nonexistent.*--data-dir.*PYRO_VAE_DATA",
        ),
        # --- memory and threads, refused before a byte is written
        "latent-dim-1e9": Case(
            train("--latent-dim", "1000000000"), r"latent_dim 1000000000.*lower model\.latent_dim"
        ),
        "hidden-1e9": Case(train("--hidden", "1000000000"), r"weights.*--hidden"),
        "iwae-1e5-particles": Case(
            train("--loss", "iwae", "--num-particles", "100000"),
            r"training step of \d+ points x 100000 particles.*GiB.*--num-particles",
        ),
        "batch-size-1e12": Case(train("--batch-size", "1000000000000"), r"training step.*--batch-size"),
        "eval-chunk-1e12": Case(
            train("--eval-chunk-size", "1000000000000"), r"evaluation chunk.*--eval-chunk-size"
        ),
        "num-threads-100000": Case(
            train("--num-threads", "100000"),
            r"train\.num_threads 100000 is more than the \d+ CPU cores.*--num-threads",
        ),
        # --- seeds beyond torch's 64 bits (were "internal error: Overflow when unpacking long long")
        "seed-1e23": Case(
            train("--seed", "100000000000000000000000"), r"train\.seed must be between 0 and 2\*\*63 - 1"
        ),
        "data-seed-1e23": Case(
            train("--data-seed", "100000000000000000000000"), r"data\.seed must be between 0 and 2\*\*63 - 1"
        ),
        "diagnose-seed-1e23": Case(
            ["diagnose", RUN, "--no-progress", "--nuts-points", "0", "--seed", "100000000000000000000000"],
            r"--seed must be between 0 and 2\*\*63 - 1",
        ),
        # --- the output location
        "out-dot": Case(train(out="."), r"already holds files.*--overwrite"),
        "out-partial-is-a-file": Case(
            train(), r"\.new\.partial is in the way", setup=write(f".{NEW}.partial", "x")
        ),
        "out-parent-is-a-file-says-how": Case(
            train(out="afile/sub"),
            r"afile is a file, not a directory; choose another --out",
            setup=write("afile", "x"),
        ),
        "compare-into-a-run": Case(
            ["compare", "--out", RUN, *QUICK_COMPARE], r"run already holds a run.*--overwrite"
        ),
        "compare-into-user-files": Case(
            ["compare", "--out", "mine", *QUICK_COMPARE],
            r"mine already holds files",
            setup=write("mine/a.txt", "a"),
        ),
        "compare-prior-twice": Case(
            ["compare", "--out", NEW, "--quick", "--priors", "laplace,laplace"],
            r"listed twice; list each prior once",
        ),
        "compare-scales-without-normal": Case(
            ["compare", "--out", NEW, "--quick", "--priors", "laplace", "--normal-scales", "2"],
            r"add normal to --priors",
        ),
        "diagnose-out-is-a-file": Case(
            ["diagnose", RUN, "--no-progress", "--out", "afile"],
            r"--out afile is a file",
            setup=write("afile", "x"),
        ),
        "evaluate-output-is-a-dir": Case(
            ["evaluate", RUN, "--no-progress", "--output", "adir"],
            r"--output adir is a directory; give a file path",
            setup=mkdir("adir"),
        ),
        "evaluate-output-folder-missing": Case(
            ["evaluate", RUN, "--no-progress", "--output", "no/such/m.json"],
            r"its folder no/such does not exist: create it",
        ),
        "evaluate-ais-chains-1e8": Case(
            [
                "evaluate",
                RUN,
                "--no-progress",
                "--method",
                "ais",
                "--ais-chains",
                "100000000",
                "--ais-steps",
                "2",
            ],
            r"annealed importance sampling with 100,000,000 chains per point needs about .*--ais-chains",
        ),
        "evaluate-output-into-the-run": Case(
            ["evaluate", RUN, "--no-progress", "--output", f"{RUN}/config.json"],
            r"--output run/config\.json is inside the run directory run.*choose a path outside it",
        ),
        "evaluate-output-over-a-user-file": Case(
            ["evaluate", RUN, "--no-progress", "--output", "notes.txt"],
            r"--output notes\.txt exists and was not written by this command",
            setup=write("notes.txt", "mine"),
        ),
        # --- saved files
        "config-of-a-saved-model": Case(
            train("--config", "model.json"),
            r"model\.json holds a saved model but no run settings",
            setup=model_config_only,
        ),
        "evaluate-format-999": Case(
            ["evaluate", RUN, "--no-progress"], r"format_version 999", setup=damaged(format_999)
        ),
        "evaluate-model-fifo": Case(
            ["evaluate", RUN, "--no-progress"],
            r"model\.pt is not a regular file",
            setup=fifo(f"{RUN}/model.pt"),
        ),
        "config-fifo": Case(
            train("--config", "cfg.json"), r"cfg\.json is not a regular file", setup=fifo("cfg.json")
        ),
        # --- .npy files: each message names the file; none advises an unsafe load
        "npy-missing": Case(npy_train("no.npy"), r"no \.npy file at no\.npy.*--data-path"),
        "npy-complex": Case(
            npy_train("c.npy"),
            r"c\.npy holds an array of dtype complex128",
            setup=npy("c.npy", np.ones((30, 3)) + 1j),
        ),
        "npy-strings": Case(
            npy_train("s.npy"),
            r"s\.npy holds an array of dtype <U1",
            setup=npy("s.npy", np.array([["a"]] * 30)),
        ),
        "npy-objects": Case(
            npy_train("o.npy"),
            r"o\.npy cannot be read as a \.npy array of numbers",
            setup=npy("o.npy", np.array([[1, "a"]] * 30, dtype=object), allow_pickle=True),
        ),
        "npy-npz": Case(
            npy_train("z.npz"),
            r"z\.npz is an \.npz archive \(a\)",
            setup=lambda t: np.savez(t / "z.npz", a=np.ones((30, 3))),
        ),
        "npy-1d": Case(
            npy_train("v.npy"),
            r"v\.npy holds an array of shape \(5,\).*reshape",
            setup=npy("v.npy", np.arange(5.0)),
        ),
        "npy-5d": Case(
            npy_train("d.npy"),
            r"d\.npy holds an array of shape \(30, 1, 2, 2, 2\)",
            setup=npy("d.npy", np.ones((30, 1, 2, 2, 2))),
        ),
        "npy-empty": Case(
            npy_train("e.npy"), r"e\.npy holds no data points", setup=npy("e.npy", np.zeros((0, 3)))
        ),
        "csv-ragged-says-how": Case(
            csv_train("r.csv"),
            r"r\.csv:41: expected 2 columns, found 3; give every row",
            setup=write("r.csv", CSV_GOOD_ROWS + "1,2,3\n"),
        ),
    }
)

for _name, (_fn, _pattern) in DAMAGE.items():
    CLI_CASES[f"evaluate-{_name}"] = Case(["evaluate", RUN, "--no-progress"], _pattern, setup=damaged(_fn))
    CLI_CASES[f"diagnose-{_name}"] = Case(
        ["diagnose", RUN, "--no-progress", "--num-points", "5", "--num-samples", "10", "--nuts-points", "0"],
        _pattern,
        setup=damaged(_fn),
    )
    CLI_CASES[f"resume-{_name}"] = Case(train("--resume", out=RUN), _pattern, setup=damaged(_fn))


@pytest.mark.parametrize("case", list(CLI_CASES.values()), ids=list(CLI_CASES))
def test_cli_refuses(case: Case, finished_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    shutil.copytree(finished_run, tmp_path / RUN)
    case.setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)

    code, err = run_cli(case.argv, capsys)

    assert code != 0, err
    assert re.search(case.pattern, err, re.S), err
    assert "error" in err
    assert "Traceback" not in err
    assert "internal error" not in err, err  # an expected failure, not a bug report
    assert "weights_only=False" not in err
    after = snapshot(tmp_path)
    changed = [p for p, b in before.items() if after.get(p, "gone") != b]
    assert not changed, f"changed or removed: {changed}"
    assert set(after) - set(before) <= case.new_ok, f"new files: {sorted(set(after) - set(before))}"
    assert not (tmp_path / "PWNED").exists()
    if NEW not in before:
        assert not (tmp_path / NEW).exists()  # a fresh --out that failed is not created


SUBPROCESS_CASES = {
    "lr-0": ["train", "--out", NEW, *SMALL, "--lr", "0"],
    "evaluate-hostile-pickle": ["evaluate", RUN, "--no-progress"],
}


@pytest.mark.parametrize("argv", list(SUBPROCESS_CASES.values()), ids=list(SUBPROCESS_CASES))
def test_cli_subprocess_boundary(argv: list[str], finished_run: Path, tmp_path: Path) -> None:
    shutil.copytree(finished_run, tmp_path / RUN)
    hostile(tmp_path / RUN)
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_vae", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.startswith("pyro-vae: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "weights_only=False" not in proc.stderr
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------------------- the API


def _data(n: int = 32, d: int = 4) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(0))


def _vae(**kw) -> VAE:
    return VAE(
        **{"input_dim": 4, "latent_dim": 2, "hidden": (8,), "likelihood": "continuous_bernoulli", **kw}
    )


def _fit(**kw) -> Callable[[Path], object]:
    return lambda tmp: fit(_vae(), _data(), progress=False, **{"epochs": 1, **kw})


def _load_damaged_config(tmp: Path) -> None:
    vae = _vae()
    vae.save(tmp / "saved")
    (tmp / "saved" / "config.json").write_text("{broken")
    return lambda: VAE.load(tmp / "saved")


def _csv_label(tmp: Path):
    (tmp / "two.csv").write_text(CSV_GOOD_ROWS)
    return lambda: read_csv(tmp / "two.csv", label_column=5)


def _nan_evaluate(tmp: Path):
    vae = _vae()
    fit(vae, _data(), progress=False, epochs=1)
    with torch.no_grad():
        for p in vae.parameters():
            p.fill_(float("nan"))
    return lambda: evaluate(vae, _data(), 5)


def later(make: Callable[[], object]) -> Callable[[Path], Callable[[], object]]:
    """A case whose call needs no files."""
    return lambda tmp: make


API_CASES = {
    "fit-empty-data": (
        later(lambda: fit(_vae(), torch.empty(0, 4), progress=False, epochs=1)),
        DataError,
        r"no data points",
    ),
    "fit-valid-wrong-width": (
        later(lambda: fit(_vae(), _data(), _data(8, 5), progress=False, epochs=1)),
        DataError,
        r"5",
    ),
    "fit-epochs-string": (
        later(lambda: _fit(epochs="2")(None)),
        ConfigError,
        r"train\.epochs must be an integer",
    ),
    "fit-batch-size-float": (
        later(lambda: _fit(batch_size=64.5)(None)),
        ConfigError,
        r"train\.batch_size must be an integer or null, got 64\.5",
    ),
    "fit-unknown-setting": (later(lambda: _fit(bogus=1)(None)), ConfigError, r"unknown setting.*'bogus'"),
    "fit-patience-without-valid": (later(lambda: _fit(patience=3)(None)), ConfigError, r"patience.*valid"),
    "fit-beta-string": (later(lambda: _fit(beta="x")(None)), ConfigError, r"train\.beta.*'x'"),
    "vae-hidden-float": (later(lambda: _vae(hidden=(1.7,))), ConfigError, r"hidden.*1\.7"),
    "vae-latent-dim-0": (later(lambda: _vae(latent_dim=0)), ConfigError, r"latent_dim"),
    "vae-encoder-min-scale-negative": (
        later(lambda: _vae(encoder_min_scale=-1)),
        ConfigError,
        r"encoder_min_scale",
    ),
    "priors-create-int": (later(lambda: priors.create(42)), (TypeError, ValueError), r"prior.*42|42.*prior"),
    "likelihoods-create-none": (
        later(lambda: likelihoods.create(None)),
        (TypeError, ValueError),
        r"likelihood.*None|None.*likelihood",
    ),
    "vae-load-damaged-config": (_load_damaged_config, ConfigError, r"saved/config\.json"),
    "read-csv-label-column-out-of-range": (_csv_label, (DataError, ValueError), r"two\.csv.*5|5.*two\.csv"),
    "evaluate-nan-weights": (_nan_evaluate, (PyroVAEError, ValueError), r"NaN|non-finite|finite"),
}


def _trained(missing: bool = False) -> VAE:
    vae = _vae(missing=missing)
    fit(vae, _data(), progress=False, epochs=1)
    return vae


def _impute_nan_weights(tmp: Path):
    vae = _trained(missing=True)
    with torch.no_grad():
        for p in vae.parameters():
            p.fill_(float("nan"))
    return lambda: vae.impute(torch.tensor([[float("nan"), 0.5, 0.5, 0.5]]))


def _saved(tmp: Path, change: Callable[[Path], None]) -> Callable[[], object]:
    _vae().save(tmp / "saved")
    change(tmp / "saved")
    return lambda: VAE.load(tmp / "saved")


def _format(version) -> Callable[[Path], None]:
    def change(saved: Path) -> None:
        d = json.loads((saved / "config.json").read_text())
        d["format_version"] = version
        (saved / "config.json").write_text(json.dumps(d))

    return change


def _fifo_weights(saved: Path) -> None:
    (saved / "model.pt").unlink()
    os.mkfifo(saved / "model.pt")


def _save_into_file(tmp: Path):
    (tmp / "afile").write_text("mine")
    return lambda: _vae().save(tmp / "afile")


API_CASES.update(
    {
        "fit-complex-data": (
            later(lambda: fit(_vae(), np.ones((32, 4)) + 1j, progress=False, epochs=1)),
            DataError,
            r"complex.*imaginary part",
        ),
        "fit-object-array": (
            later(
                lambda: fit(
                    _vae(), np.array([[1, "a", None, 2]] * 32, dtype=object), progress=False, epochs=1
                )
            ),
            DataError,
            r"Python objects \(numpy dtype object\)",
        ),
        "fit-string-array": (
            later(lambda: fit(_vae(), np.array([["1", "2", "3", "4"]] * 32), progress=False, epochs=1)),
            DataError,
            r"text \(numpy dtype <U1\)",
        ),
        "impute-without-missing": (
            later(lambda: _trained().impute(torch.tensor([[float("nan"), 0.5, 0.5, 0.5]]))),
            PyroVAEError,
            r"impute fills NaN cells, but this VAE was built without missing=True",
        ),
        "impute-nan-weights": (_impute_nan_weights, PyroVAEError, r"NaN or infinite weights"),
        "load-format-999": (lambda t: _saved(t, _format(999)), PyroVAEError, r"format_version 999"),
        "load-format-string": (lambda t: _saved(t, _format("1")), PyroVAEError, r"format_version '1'"),
        "load-fifo-weights": (
            lambda t: _saved(t, _fifo_weights),
            PyroVAEError,
            r"model\.pt is not a regular file",
        ),
        "save-into-a-file": (_save_into_file, PyroVAEError, r"afile: it is a file"),
        "likelihood-missing-option": (
            later(lambda: likelihoods.create("categorical")),
            ConfigError,
            r"needs the option\(s\) num_categories",
        ),
        "encode-integer-tensor": (
            later(lambda: _vae().encode(torch.ones(3, 4, dtype=torch.int64))),
            DataError,
            r"expected a floating-point tensor, got torch\.int64: convert it with x\.float\(\)",
        ),
        "encode-string": (later(lambda: _vae().encode("abc")), DataError, r"got str: pass torch\.as_tensor"),
        "sample-1e12": (
            later(lambda: _vae().sample(10**12)),
            ConfigError,
            r"1,000,000,000,000 draws needs about",
        ),
        "decode-string": (
            later(lambda: _vae().decode("z")),
            DataError,
            r"expected codes as a torch\.Tensor, got str",
        ),
        "registry-did-you-mean": (
            later(lambda: priors.create("vampp")),
            ConfigError,
            r"Did you mean 'vamp'\?",
        ),
        "fit-step-too-big": (
            later(lambda: fit(_vae(), _data(), progress=False, epochs=1, loss="iwae", num_particles=10**10)),
            ConfigError,
            r"10000000000 particles.*--num-particles",
        ),
    }
)


@pytest.mark.parametrize(("make", "error", "pattern"), list(API_CASES.values()), ids=list(API_CASES))
def test_api_refuses(make, error, pattern: str, tmp_path: Path) -> None:
    call = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        call()
    assert re.search(pattern, str(info.value), re.S), str(info.value)
    assert isinstance(info.value, (PyroVAEError, ValueError, TypeError))
    assert snapshot(tmp_path) == before


def test_latent_dim_numpy_integer_is_accepted() -> None:
    vae = _vae(latent_dim=np.int64(2))
    assert vae.latent_dim == 2 and type(vae.latent_dim) is int


def test_enough_cases() -> None:
    assert len(CLI_CASES) + len(SUBPROCESS_CASES) + len(API_CASES) >= 60
    assert not (set(CLI_CASES) & set(API_CASES))
    assert RunDirectoryError  # the documented type of the location refusals
