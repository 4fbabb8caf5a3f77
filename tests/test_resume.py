"""Runs that never lose work: a killed run resumes to the bit, two processes on one --out,
a disk that fills up mid-checkpoint, and a loss that diverges."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_vae import VAE, fit
from pyro_vae.infer.evaluation import validation_elbo
from pyro_vae.infer.training import TrainingDiverged
from pyro_vae.io import load_tensors
from tests.conftest import binary_data

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
RUN = ["--hidden", "32", "--batch-size", "16", "--eval-samples", "5", "--no-progress", "--num-threads", "1"]


def start(out: Path, *flags: str, epochs: int) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "pyro_vae",
        "train",
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        *RUN,
        *flags,
    ]
    return subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def partial(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def epochs_written(directory: Path) -> int:
    try:
        return max(0, len((directory / "history.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the condition: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def history_rows(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------- SIGKILL, then --resume


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    flags = ("--patience", "0")
    killed = start(a, *flags, epochs=8)
    straight = start(b, *flags, epochs=8)  # the uninterrupted run, alongside
    wait_for(lambda: epochs_written(partial(a)) >= 3, killed)
    time.sleep(0.1)  # into the next epoch
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not a.exists() and (partial(a) / "training_state.pt").is_file()
    done = epochs_written(partial(a))
    assert 3 <= done < 8, "the kill came after training ended"

    code, _, err = finish(start(a, *flags, "--resume", epochs=8))
    assert code == 0, err
    code, _, err = finish(straight)
    assert code == 0, err

    assert not partial(a).exists()
    model_a = load_tensors(a / "model.pt")
    model_b = load_tensors(b / "model.pt")
    flat_a, flat_b = _tensors(model_a), _tensors(model_b)
    assert flat_a.keys() == flat_b.keys() and flat_a
    for k in flat_a:
        assert torch.equal(flat_a[k], flat_b[k]), k
    state_a = load_tensors(a / "training_state.pt")
    state_b = load_tensors(b / "training_state.pt")
    for part in ("model", "optimizer"):
        ta, tb = _tensors(state_a[part]), _tensors(state_b[part])
        assert ta.keys() == tb.keys() and ta
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{part}: {k}"
    assert history_rows(a) == history_rows(b)
    assert len(history_rows(a)) == 8


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


# ----------------------------------------------------------------------------- two processes, one --out


def test_two_processes_on_one_out(tmp_path: Path) -> None:
    out = tmp_path / "run"
    procs = [start(out, epochs=6), start(out, epochs=6)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    (_, _, err) = next(r for r in results if r[0] != 0)
    assert "being written by another pyro-vae process" in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run"
    ]  # no partial, and the lock file went with its run
    for name in ("config.json", "model.pt", "metrics.json", "training_state.pt", "history.csv"):
        assert (out / name).is_file(), name
    vae = VAE.load(out)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert len(history_rows(out)) == 6


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> None:
    """Fill the file system of ``directory`` to the last byte."""
    with (directory / "filler").open("wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break


def test_disk_full_mid_checkpoint_keeps_the_last_one(small_disk: Path) -> None:
    out = small_disk / "run"
    proc = start(out, "--patience", "0", epochs=200)
    wait_for(lambda: epochs_written(partial(out)) >= 1, proc)
    fill(small_disk)
    code, _, err = finish(proc)
    assert code != 0
    assert "no space left on device" in err.lower(), err
    assert err.startswith("pyro-vae: error: ") or "\npyro-vae: error: " in err, err
    assert "Traceback" not in err
    assert not out.exists()
    work = partial(out)
    vae = VAE.load(work)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    state = load_tensors(work / "training_state.pt", finite=True)
    assert state["epoch"] >= 1
    assert not [p.name for p in work.iterdir() if p.name.endswith(".tmp")]  # no half-written files


# ----------------------------------------------------------------------------- divergence (the API)


class Blowup:
    """Wraps the decoder: after ``after`` calls its output is multiplied by ``factor``."""

    def __init__(self, vae: VAE, after: int, factor: float) -> None:
        self.forward, self.after, self.factor, self.calls = vae.decoder.forward, after, factor, 0
        self.active = True
        vae.decoder.forward = self

    def __call__(self, z):
        self.calls += 1
        h = self.forward(z)
        return h * self.factor if self.active and self.calls > self.after else h


def _diverge(factor: float, with_valid: bool) -> tuple[VAE, str, torch.Tensor]:
    x = binary_data(200, 10)
    valid = binary_data(50, 10, seed=1) if with_valid else None
    vae = VAE(10, 2, hidden=(16,), likelihood="bernoulli")
    fit(vae, x, valid, epochs=1, batch_size=50, progress=False)  # builds the decoder
    blow = Blowup(vae, after=30, factor=factor)  # a few epochs of steps (and checks) first
    with pytest.raises(TrainingDiverged) as info:
        fit(vae, x, valid, epochs=50, batch_size=50, progress=False)
    blow.active = False
    return vae, str(info.value), x


@pytest.mark.parametrize("with_valid", [True, False], ids=["valid", "no-valid"])
@pytest.mark.parametrize("factor", [1e12, float("nan")], ids=["finite-explosion", "nan"])
def test_divergence_restores_good_weights(factor: float, with_valid: bool) -> None:
    vae, message, x = _diverge(factor, with_valid)
    if factor != factor:
        assert "nan" in message.lower()
    else:
        assert "exploded" in message
    assert "restored to the weights after epoch" in message, message
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert torch.isfinite(torch.tensor(validation_elbo(vae, x)))


def test_divergence_on_huge_data_blames_the_scale() -> None:
    x = binary_data(200, 10) * 1e30
    vae = VAE(10, 2, hidden=(16,), likelihood="gaussian")
    with pytest.raises(TrainingDiverged) as info:
        fit(vae, x, epochs=5, batch_size=50, progress=False)
    message = str(info.value)
    assert "rescale" in message and "standardize" in message, message
    assert "restored" in message
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert torch.isfinite(torch.tensor(validation_elbo(vae, x / 1e30)))
