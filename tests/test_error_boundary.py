"""The command line's error boundary tells a user's mistake from a bug of pyro_vae.

The library's own errors (:mod:`pyro_vae.errors`) and ``OSError`` are the user's to act on:
one line ``pyro-vae: error: ...``, exit 2 (1 for a diverged run or a lost peer). Anything
else is an internal error: one line that asks for a report, exit 3, and ``--debug`` shows the
traceback. The core raises the library's errors, never a bare builtin, for a user's input.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import errors
from pyro_vae.app import run
from pyro_vae.data import as_tensor, features_of, load_dataset
from pyro_vae.distributions import likelihoods
from pyro_vae.errors import ConfigError, DataError, PyroVAEError
from pyro_vae.infer.distributed import PeerFailure
from pyro_vae.infer.objectives import BetaSchedule
from pyro_vae.infer.training import History, TrainingDiverged
from pyro_vae.utils import resolve_device
from tests.test_faults import run_cli

ROOT = Path(__file__).resolve().parents[1]
INTERNAL = re.compile(
    r"^pyro-vae: internal error: (?P<what>[^\n]+); please report it \(--debug shows the traceback\)\n\Z"
)


def train_argv(tmp_path: Path, *flags: str) -> list[str]:
    return [*flags, "train", "--out", str(tmp_path / "new"), "--no-progress", "--epochs", "1"]


def inject(monkeypatch, error: BaseException) -> None:
    """A fault inside the run: loading the data raises ``error``."""

    def load_data(cfg):
        raise error

    monkeypatch.setattr(run, "load_data", load_data)


# ----------------------------------------------------------------------------- bugs: exit 3


BUGS = {
    "ValueError": ValueError("shapes (3,) and (4,) do not broadcast"),
    "TypeError": TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'"),
    "KeyError": KeyError("loc"),
    "RuntimeError": RuntimeError("Expected 3D (unbatched) or 4D (batched) input to conv2d"),
    "IndexError": IndexError("index -9223372036854775808 is out of bounds"),
    "AttributeError": AttributeError("'NoneType' object has no attribute 'setup'"),
    "ZeroDivisionError": ZeroDivisionError("division by zero"),
}


@pytest.mark.parametrize("error", list(BUGS.values()), ids=list(BUGS))
def test_an_internal_bug_is_exit_3_and_asks_for_a_report(error, tmp_path, monkeypatch, capsys) -> None:
    inject(monkeypatch, error)
    code, err = run_cli(train_argv(tmp_path), capsys)
    assert code == 3, err
    match = INTERNAL.match(err)
    assert match, err
    assert match["what"].startswith(f"{type(error).__name__}: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "new").exists()


def test_an_internal_error_of_several_lines_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    inject(monkeypatch, RuntimeError("first line\nsecond line\nthird"))
    code, err = run_cli(train_argv(tmp_path), capsys)
    assert code == 3
    assert INTERNAL.match(err)["what"] == "RuntimeError: first line", err


def test_debug_shows_the_traceback_of_an_internal_error(tmp_path, monkeypatch, capsys) -> None:
    inject(monkeypatch, ValueError("a bug"))
    code, err = run_cli(train_argv(tmp_path, "--debug"), capsys)
    assert code == 3
    assert err.startswith("Traceback (most recent call last):"), err
    assert "in load_data" in err and "ValueError: a bug" in err
    assert err.splitlines()[-1] == (
        "pyro-vae: internal error: ValueError: a bug; please report it (--debug shows the traceback)"
    )


# ----------------------------------------------------------------------------- mistakes: exit 2 (or 1)


def test_a_user_mistake_is_exit_2_with_its_message(tmp_path, capsys) -> None:
    code, err = run_cli([*train_argv(tmp_path), "--lr", "0"], capsys)
    assert code == 2
    assert err == "pyro-vae: error: train.lr must be a positive number, got 0.0\n"


EXPECTED = {
    "DataError": (DataError("column 'age' is missing"), 2, "pyro-vae: error: column 'age' is missing"),
    "ConfigError": (ConfigError("model.hidden bad"), 2, "pyro-vae: error: model.hidden bad"),
    "OSError": (
        PermissionError(13, "Permission denied", "/data/x.csv"),
        2,
        "pyro-vae: error: [Errno 13] Permission denied: '/data/x.csv'",
    ),
    "OSError-plain": (
        OSError("disk full"),
        2,
        "pyro-vae: error: disk full",
    ),
    "PeerFailure": (PeerFailure("another training process failed"), 1, "pyro-vae: error: another training"),
    "TrainingDiverged": (
        TrainingDiverged("the loss became NaN", History()),
        1,
        "pyro-vae: training diverged: the loss",
    ),
}


@pytest.mark.parametrize(("error", "code", "line"), list(EXPECTED.values()), ids=list(EXPECTED))
def test_the_library_errors_and_oserror_are_one_line(error, code, line, tmp_path, monkeypatch, capsys):
    inject(monkeypatch, error)
    got, err = run_cli(train_argv(tmp_path), capsys)
    assert got == code, err
    assert err.startswith(line) and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err


def test_debug_shows_the_traceback_of_a_mistake_and_keeps_its_exit_status(tmp_path, monkeypatch, capsys):
    inject(monkeypatch, DataError("a mistake"))
    code, err = run_cli(train_argv(tmp_path, "--debug"), capsys)
    assert code == 2
    assert "Traceback" in err and err.splitlines()[-1] == "pyro-vae: error: a mistake"


def test_the_installed_command_exits_2_for_a_mistake(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_vae", *train_argv(tmp_path), "--batch-size", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "pyro-vae: error: train.batch_size must be at least 1, got 0\n"


# ----------------------------------------------------------------------------- the core's own errors


def test_every_library_error_is_also_a_builtin_a_caller_may_catch() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, PyroVAEError)]
    assert len(classes) >= 10
    for c in classes:
        if c is not PyroVAEError:
            assert issubclass(c, (ValueError, TypeError, KeyError, RuntimeError)), c
    assert issubclass(PeerFailure, PyroVAEError) and issubclass(PeerFailure, RuntimeError)


# Inputs that raised a bare builtin before; each now raises a library error that is the builtin too.
API_MISTAKES = {
    "likelihood-option": (lambda: likelihoods.create("gaussian_shared", init_scale=1e-4), ValueError),
    "categories-1": (lambda: likelihoods.create("categorical", num_categories=1), ValueError),
    "data-type": (lambda: as_tensor(object()), TypeError),
    "batch-type": (lambda: features_of({"y": torch.zeros(2)}), TypeError),
    "beta-spec": (lambda: BetaSchedule.create("x"), ValueError),
    "beta-negative": (lambda: BetaSchedule(end=-1.0), ValueError),
    "history-column": (lambda: History()["bogus"], KeyError),
    "cuda-missing": (
        lambda: resolve_device("cuda:7") if not torch.cuda.is_available() else 1 / 0,
        ValueError,
    ),
}


@pytest.mark.parametrize(("call", "builtin"), list(API_MISTAKES.values()), ids=list(API_MISTAKES))
def test_the_core_raises_library_errors_for_a_users_input(call, builtin) -> None:
    with pytest.raises(PyroVAEError) as info:
        call()
    assert isinstance(info.value, builtin)
    assert str(info.value) and not str(info.value).startswith(("'", '"')), str(info.value)


@pytest.mark.parametrize("content", ["objects", "text", "cut"])
def test_a_file_that_is_not_a_numeric_npy_is_a_data_error(content, tmp_path) -> None:
    path = tmp_path / "x.npy"
    if content == "objects":
        np.save(path, np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    elif content == "text":
        path.write_text("a,b\n1,2\n")
    else:
        np.save(path, np.zeros((50, 4)))
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"x\.npy cannot be read as a \.npy array of numbers") as info:
        load_dataset("npy", path=str(path))
    assert "allow_pickle" not in str(info.value)


BARE = re.compile(r"raise (ValueError|TypeError|KeyError|RuntimeError)\(")


def test_the_package_raises_no_bare_builtin_error() -> None:
    """A user's input that fails gets a library error; a bare ``raise ValueError(...)`` would
    reach the command line as an internal error (or mean a real internal check: then say
    so with ``assert`` or a comment, and list the file here)."""
    package = ROOT / "pyro_vae"
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if BARE.search(line)
    ]
    assert not found, "raise the library's own errors (pyro_vae/errors.py) instead:\n" + "\n".join(found)
