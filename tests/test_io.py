"""pyro_vae.io on real damaged files: each failure is one clear error naming the file."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from pyro_vae import VAE
from pyro_vae.errors import CheckpointError, ConfigError, RunDirectoryError
from pyro_vae.infer.training import TRAINING_STATE_FILE, fit
from pyro_vae.io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    load_state_into,
    load_tensors,
    read_json,
    save_figure,
)
from tests.conftest import binary_data


def small_vae(latent: int = 2) -> VAE:
    return VAE(6, latent, hidden=(8,), likelihood="bernoulli")


def assert_clear(err: pytest.ExceptionInfo, path: Path) -> str:
    """The message names the file and never advises loading with weights_only=False."""
    message = str(err.value)
    assert str(path) in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    return message


def no_tmp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


class Hostile:
    """Unpickling this runs a shell command: the file must be refused, the command never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@dataclass
class Settings:
    lr: float = 0.1


# ----------------------------------------------------------------------------- load_tensors


@pytest.fixture
def saved_state(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    torch.save(small_vae().state_dict(), path)
    return path


def test_load_tensors_reads_a_state_dict(saved_state):
    state = load_tensors(saved_state, finite=True)
    assert set(state) == set(small_vae().state_dict())


def test_missing_file(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(CheckpointError, match="does not exist") as err:
        load_tensors(path)
    assert_clear(err, path)


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory") as err:
        load_tensors(tmp_path)
    assert_clear(err, tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)") as err:
        load_tensors(path)
    assert_clear(err, path)


def test_truncated_file(saved_state):
    data = saved_state.read_bytes()
    saved_state.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged") as err:
        load_tensors(saved_state)
    assert "retrain" in assert_clear(err, saved_state)


@pytest.mark.parametrize("head", [b"", b"\x80\x02", b"PK\x03\x04"])
def test_random_bytes(tmp_path, head):
    path = tmp_path / "model.pt"
    path.write_bytes(head + os.urandom(4096))
    with pytest.raises(CheckpointError, match="not loaded") as err:
        load_tensors(path)
    assert_clear(err, path)


def test_text_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="damaged") as err:
        load_tensors(path)
    assert_clear(err, path)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_hostile_pickle_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    payload = {"weight": torch.ones(2), "evil": Hostile(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="not loaded") as err:
        load_tensors(path)
    assert_clear(err, path)
    assert not marker.exists(), "unpickling ran the file's code"


def test_custom_class_instance_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"settings": Settings()}, path)
    with pytest.raises(CheckpointError, match="Python objects other than tensors") as err:
        load_tensors(path)
    message = assert_clear(err, path)
    assert "never runs code" in message and "Settings" in message


def test_not_a_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a dictionary") as err:
        load_tensors(path)
    assert_clear(err, path)


def test_nan_weights_with_finite(tmp_path):
    state = small_vae().state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key][0, 0] = float("nan")
    path = tmp_path / "model.pt"
    torch.save(state, path)
    assert key in load_tensors(path)  # without finite: loaded as it is
    with pytest.raises(CheckpointError, match="NaN or infinite") as err:
        load_tensors(path, finite=True)
    message = assert_clear(err, path)
    assert key in message and "diverged" in message


def test_nested_inf_with_finite(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"model": {"w": torch.ones(2)}, "steps": [torch.tensor([1.0, float("inf")])]}, path)
    with pytest.raises(CheckpointError, match=r"steps/0"):
        load_tensors(path, finite=True)
    torch.save({"count": torch.tensor([1, 2]), "w": torch.zeros(2)}, path)  # integers: nothing to check
    assert load_tensors(path, finite=True)["count"].tolist() == [1, 2]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(saved_state):
    saved_state.chmod(0)
    try:
        with pytest.raises(CheckpointError, match="permission denied") as err:
            load_tensors(saved_state)
        assert_clear(err, saved_state)
    finally:
        saved_state.chmod(0o644)


# ----------------------------------------------------------------------------- read_json


def test_read_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"a": 1}')
    assert read_json(path) == {"a": 1}


@pytest.mark.parametrize(
    "content, match",
    [
        (b'{"a": 1,\n  "b": }', r"not valid JSON: .* line 2, column 8"),
        (b"[1, 2]", r"holds a JSON list, not an object"),
        (b"", r"empty \(0 bytes\)"),
        (b'{"a": "\xff\xfe"}', r"not UTF-8"),
    ],
)
def test_read_json_errors(tmp_path, content, match):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as err:
        read_json(path)
    assert str(path) in str(err.value)


def test_read_json_missing_or_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_json(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="is a directory"):
        read_json(tmp_path)


# ----------------------------------------------------------------------------- load_state_into


def test_load_state_into_names_the_file_and_the_mismatch(tmp_path):
    path = tmp_path / "model.pt"
    state = small_vae(latent=2).state_dict()
    with pytest.raises(CheckpointError, match=r"does not fit the model described in .*size mismatch") as err:
        load_state_into(small_vae(latent=3), state, path, config=tmp_path / "config.json")
    assert str(path) in str(err.value) and "another version or edited" in str(err.value)
    del state[next(iter(state))]
    with pytest.raises(CheckpointError, match="Missing key"):
        load_state_into(small_vae(latent=2), state, path)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_writers_write(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1]})
    text = (tmp_path / "a.json").read_text()
    assert text.endswith("}\n") and "NaN" in text and '  "y"' in text
    atomic_torch_save({"w": torch.arange(3.0)}, tmp_path / "w.pt")
    assert load_tensors(tmp_path / "w.pt")["w"].tolist() == [0.0, 1.0, 2.0]
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    save_figure(fig, tmp_path / "f.png", dpi=50)
    save_figure(fig, tmp_path / "f.pdf")
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    assert no_tmp_files(tmp_path)


def test_failing_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(3)}, path)
    before = path.read_bytes()

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise ValueError("serialisation broke")

    with pytest.raises(RunDirectoryError, match="serialisation broke") as err:
        atomic_write(path, half_then_fail)
    assert f"could not write {path}" in str(err.value)
    assert "the previous model.pt is unchanged" in str(err.value)
    assert path.read_bytes() == before
    assert no_tmp_files(tmp_path)


def test_failing_write_of_a_new_file_leaves_nothing(tmp_path):
    def fail(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(RunDirectoryError, match="disk quota exceeded; no new.json was written"):
        atomic_write(tmp_path / "new.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_is_not_wrapped_but_cleans_up(tmp_path):
    def interrupted(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.txt", interrupted)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs, to fill up for real (needs root and mount; skipped otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def fill(directory: Path) -> None:
    """Write until the disk is full (unbuffered, so closing flushes nothing more)."""
    with open(directory / "filler", "wb", buffering=0) as f:
        with pytest.raises(OSError) as err:
            while True:
                f.write(b"\0" * 4096)
    assert err.value.errno == errno.ENOSPC


@pytest.mark.parametrize("kind", ["torch", "text"])
def test_full_disk_keeps_the_previous_file(tiny_disk, kind):
    path = tiny_disk / ("model.pt" if kind == "torch" else "metrics.json")
    if kind == "torch":
        atomic_torch_save({"w": torch.ones(16)}, path)
    else:
        atomic_write_text(path, '{"old": true}\n')
    before = path.read_bytes()
    fill(tiny_disk)
    with pytest.raises(RunDirectoryError) as err:
        if kind == "torch":
            atomic_torch_save({"w": torch.randn(100_000)}, path)
        else:
            atomic_write_text(path, "x" * 200_000)
    message = str(err.value)
    assert message.startswith(f"could not write {path}: no space left on device;")
    assert f"the previous {path.name} is unchanged" in message
    assert path.read_bytes() == before
    assert no_tmp_files(tiny_disk)


# ----------------------------------------------------------------------------- VAE.load


@pytest.fixture
def saved_vae(tmp_path) -> Path:
    small_vae().save(tmp_path)
    return tmp_path


def test_vae_load_damaged_config(saved_vae):
    config = saved_vae / "config.json"
    config.write_text(config.read_text()[:-20])
    with pytest.raises(ConfigError, match=r"not valid JSON: .* line \d+, column \d+") as err:
        VAE.load(saved_vae)
    assert str(config) in str(err.value)


def test_vae_load_config_that_is_a_list(saved_vae):
    (saved_vae / "config.json").write_text("[1, 2, 3]\n")
    with pytest.raises(ConfigError, match="JSON list") as err:
        VAE.load(saved_vae)
    assert str(saved_vae / "config.json") in str(err.value)


def test_vae_load_config_with_a_bad_model_section(saved_vae):
    config = saved_vae / "config.json"
    payload = json.loads(config.read_text())
    payload["model"]["no_such_option"] = 1
    config.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="does not describe a VAE") as err:
        VAE.load(saved_vae)
    assert str(config) in str(err.value)


def test_vae_load_truncated_weights(saved_vae):
    weights = saved_vae / "model.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged") as err:
        VAE.load(saved_vae)
    assert_clear(err, weights)


def test_vae_load_weights_of_another_shape(saved_vae):
    config = saved_vae / "config.json"
    payload = json.loads(config.read_text())
    payload["model"]["latent_dim"] = 3
    config.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="size mismatch") as err:
        VAE.load(saved_vae)
    message = assert_clear(err, saved_vae / "model.pt")
    assert f"the model described in {config}" in message


def test_vae_load_nan_weights(saved_vae):
    vae = small_vae()
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    next(v for v in state.values() if v.is_floating_point()).fill_(float("inf"))
    torch.save(state, saved_vae / "model.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        VAE.load(saved_vae)


def test_vae_save_refuses_to_overwrite_a_damaged_config(saved_vae):
    (saved_vae / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        small_vae().save(saved_vae)


def test_resume_from_a_damaged_training_state(tmp_path):
    x = binary_data(64, d=6)
    fit(small_vae(), x, epochs=1, batch_size=32, checkpoint_dir=tmp_path, progress=False)
    state = tmp_path / TRAINING_STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="training state .* damaged") as err:
        fit(small_vae(), x, epochs=2, batch_size=32, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert_clear(err, state)
