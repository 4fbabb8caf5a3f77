"""Reading and writing pyro_vae's files: one atomic writer, one checkpoint reader.

Every file pyro_vae writes goes through :func:`atomic_write`, so an interrupted or failed
write (a full disk, a crash, an exception while serialising) never leaves half a file in
place of a good one. Every ``.pt`` file is read through :func:`load_tensors`, which only
ever loads tensors and plain containers (``weights_only=True``: a file cannot run code) and
turns each way a file can be unusable into one :class:`~pyro_vae.errors.CheckpointError`
that names the file and says what to do.

This is part of the probabilistic core: it must not import from :mod:`pyro_vae.app`.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pyro_vae.errors import CheckpointError, ConfigError, RunDirectoryError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "save_figure",
    "load_tensors",
    "read_json",
    "load_state_into",
    "stale_temporaries",
    "is_temporary",
    "check_training_state",
]

# What to do about a checkpoint that cannot be used, appended to most messages.
_CHECKPOINT_FIX = "retrain, resume with --resume from the run directory, or re-save the model with VAE.save"

# ----------------------------------------------------------------------------- writing

_ERRNO_WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.EIO: "input/output error",
}


def _cause_in_words(exc: BaseException) -> str:
    """The reason a write failed, in words ("no space left on device"), not a traceback."""
    seen: BaseException | None = exc
    while seen is not None:  # the OSError may be wrapped (torch, matplotlib, netCDF)
        if isinstance(seen, OSError) and seen.errno is not None:
            return _ERRNO_WORDS.get(seen.errno) or os.strerror(seen.errno).lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    lowered = text.lower()
    for words in _ERRNO_WORDS.values():
        if words in lowered:
            return words
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# What to do about a write that failed, by its errno.
_ERRNO_FIXES = {
    errno.ENOSPC: "free some space and run again",
    errno.EDQUOT: "free some space and run again",
    errno.EACCES: "check the permissions of {folder}, or write elsewhere",
    errno.EPERM: "check the permissions of {folder}, or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.ENOENT: "its folder {folder} does not exist: create it, or write elsewhere",
    errno.ENOTDIR: "a file is in the way of its folder {folder}: write elsewhere",
    errno.EISDIR: "a directory is in the way: remove it, or write elsewhere",
}


def _what_to_do(exc: BaseException, path: Path) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _ERRNO_FIXES:
            return "; " + _ERRNO_FIXES[seen.errno].format(folder=path.parent)
        seen = seen.__cause__ or seen.__context__
    return ""


def _tmp_path(path: Path) -> Path:
    """A hidden temporary name beside ``path``: same filesystem (so the rename is atomic),
    unique per process (so two processes writing one file never share a temporary)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


# The temporary files of _tmp_path: ".NAME.PID.tmp".
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def stale_temporaries(directory: str | Path) -> list[Path]:
    """The temporary files of :func:`atomic_write` in ``directory`` whose writing process has
    ended (killed mid-write): half-written, never renamed into place, safe to remove. Those of
    a process still running are left alone (it may be writing them now)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        match = _TMP_NAME.match(path.name)
        if match and path.is_file() and not _process_alive(int(match["pid"])):
            found.append(path)
    return found


def is_temporary(name: str) -> bool:
    """Whether ``name`` is that of a temporary file of :func:`atomic_write`."""
    return _TMP_NAME.match(name) is not None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort (not every platform can open a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` all or nothing: ``write(tmp)`` fills a temporary file, which replaces
    ``path`` only once it is complete and on disk.

    On any failure the temporary file is removed and the previous ``path`` (if any) is left
    byte-identical; the failure is raised as a :class:`RunDirectoryError` that says which
    file, why, and that the previous version is unchanged.
    """
    path = Path(path)
    existed = path.exists()
    tmp = _tmp_path(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: keep them
            raise
        kept = f"the previous {path.name} is unchanged" if existed else f"no {path.name} was written"
        raise RunDirectoryError(
            f"could not write {path}: {_cause_in_words(exc)}; {kept}{_what_to_do(exc, path)}"
        ) from exc
    _fsync_directory(path.parent)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with a trailing newline, atomically.

    Non-finite floats are written as ``NaN``/``Infinity`` like :func:`json.dumps` does
    (a diverged metric is still worth recording); serialise first if you need strict JSON.
    """
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically: a crash mid-write never replaces a good checkpoint."""

    def write(tmp: Path) -> None:
        # Through a Python file object, so a full disk surfaces as an OSError with its errno.
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure atomically; the format comes from ``path``'s suffix
    (the temporary file ends in ``.tmp``, which matplotlib could not guess from)."""
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs))


# ----------------------------------------------------------------------------- reading


def _check_file(path: Path, what: str, error: type[Exception], hint: str) -> None:
    """Missing, a directory, or empty: the failures that need no parsing to explain."""
    if not path.exists():
        raise error(f"{what} {path} does not exist; check the path (is it the right run directory?)")
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file; pass the file inside it")
    if not path.is_file():  # reading a FIFO would wait for a writer; a device would read for ever
        raise error(
            f"{what} {path} is not a regular file (a FIFO, socket or device); pass a file written by pyro_vae"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {_cause_in_words(exc)}") from exc
    if size == 0:
        raise error(f"{what} {path} is empty (0 bytes): the write that made it was interrupted; {hint}")


def _foreign_global(message: str) -> str | None:
    """The Python object a refused pickle refers to (``argparse.Namespace``), if it names one."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def _load_error(path: Path, what: str, exc: Exception) -> CheckpointError:
    """One CheckpointError for whatever torch raised; never repeats torch's advice to
    load with weights_only=False (that would run code from the file)."""
    if isinstance(exc, PermissionError):
        return CheckpointError(f"cannot read {what} {path}: permission denied; check its permissions")
    if isinstance(exc, pickle.UnpicklingError):
        name = _foreign_global(str(exc))
        if name is not None:
            return CheckpointError(
                f"{what} {path} holds Python objects other than tensors and plain containers "
                f"({name}); pyro_vae loads weights only and never runs code from a file. It was "
                f"not loaded; {_CHECKPOINT_FIX}"
            )
    return CheckpointError(
        f"{what} {path} is damaged or not a file written by torch.save (truncated, overwritten "
        f"or of another format) and was not loaded; {_CHECKPOINT_FIX}"
    )


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts/lists/tuples, with its key path (``model/encoder.net.0.weight``)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}/{i}" if prefix else str(i))


def _check_finite(state: dict, path: Path, what: str) -> None:
    for key, tensor in _tensors(state):
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{what} {path} holds NaN or infinite values ({key}): the run that wrote it "
                "diverged; retrain, or resume from an earlier checkpoint"
            )


def load_tensors(
    path: str | Path,
    *,
    what: str = "checkpoint",
    map_location: str | torch.device | None = "cpu",
    finite: bool = False,
) -> dict:
    """Read a ``.pt`` file written by ``torch.save``: the one way pyro_vae loads one.

    Always ``weights_only=True``, so a file can hold only tensors and plain containers and
    can never run code. Any way the file is unusable (missing, empty, truncated, foreign,
    not a dict, unreadable) becomes one :class:`CheckpointError` naming ``path`` (described
    as ``what``) and what to do. With ``finite``, a floating tensor holding NaN or inf
    anywhere in the file is an error too (a run that diverged saved it).
    """
    path = Path(path)
    _check_file(path, what, CheckpointError, _CHECKPOINT_FIX)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file: all mean "unusable"
        raise _load_error(path, what, exc) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{what} {path} holds a {type(state).__name__}, not a dictionary of tensors: "
            f"it was not written by pyro_vae; {_CHECKPOINT_FIX}"
        )
    if finite:
        _check_finite(state, path, what)
    return state


def read_json(path: str | Path, *, what: str = "config") -> dict:
    """Read a JSON object from ``path``; every failure is a :class:`ConfigError` naming it
    (with the line and column for invalid JSON), so a damaged file is never a bare traceback."""
    path = Path(path)
    _check_file(path, what, ConfigError, "restore or rewrite it")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {_cause_in_words(exc)}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "is it the right file?"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "fix or replace it"
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{what} {path} holds a JSON {_json_kind(obj)}, not an object ({{...}}); is it the right file?"
        )
    return obj


def _json_kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "list"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, bool):
        return "boolean"
    if obj is None:
        return "null"
    return "number"


def _state_dict_problems(message: str, limit: int = 3) -> str:
    """torch's multi-line load_state_dict error as a short ``; ``-joined list."""
    lines = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    if not lines:
        return message.strip()
    more = f"; and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(line.rstrip(".") for line in lines[:limit]) + more


def load_state_into(
    module: torch.nn.Module,
    state: dict,
    path: str | Path,
    *,
    config: str | Path | None = None,
) -> None:
    """``module.load_state_dict(state)``, with missing or unexpected keys and shape
    mismatches reported as a :class:`CheckpointError` that names the file ``path`` the
    state came from (and the ``config`` file that described the module, when given)."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        described = f"the model described in {config}" if config is not None else "the model"
        raise CheckpointError(
            f"{path} does not fit {described} ({_state_dict_problems(str(exc))}); "
            "was it saved by another version or edited?"
        ) from None


def state_problems(module: torch.nn.Module, state: Any, limit: int = 3) -> str | None:
    """What keeps ``state`` from loading into ``module`` (missing or unexpected keys, shapes),
    found without loading it; None when it fits."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dictionary of tensors"
    expected = module.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    for k, tensor in expected.items():
        saved = state.get(k)
        if isinstance(saved, torch.Tensor) and saved.shape != tensor.shape:
            problems.append(f"{k} is {tuple(saved.shape)} where the model has {tuple(tensor.shape)}")
        elif k in state and not isinstance(saved, torch.Tensor):
            problems.append(f"{k} is a {type(saved).__name__}, not a tensor")
    if not problems:
        return None
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def check_training_state(
    module: torch.nn.Module, state: dict, path: str | Path, keys: tuple[str, ...]
) -> None:
    """Refuse a training state that another run wrote: ``keys`` missing, or weights that do not
    fit ``module``; a :class:`CheckpointError` naming ``path`` and what to do."""
    fix = "it is not this run's training state: put back the run's own file, or start afresh with --overwrite"
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"training state {path} lacks {', '.join(missing)}; {fix}")
    problems = state_problems(module, state["model"])
    if problems is not None:
        raise CheckpointError(f"training state {path} does not fit the run's model ({problems}); {fix}")
