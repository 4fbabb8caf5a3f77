"""Run directories that never lose work.

Rules, checked before anything is written:

* an existing non-empty ``--out`` is refused unless ``--resume`` (continue it) or
  ``--overwrite`` (replace it, once the new run has succeeded) is given;
* a run trains in a hidden sibling, ``.NAME.partial``, and is moved into place only when
  it has succeeded, so ``--out`` always holds one whole run (the old one until then);
* an interrupted run (killed, diverged, disk full) stays in ``.NAME.partial`` with its last
  good checkpoint, and ``--resume`` continues it from there;
* one process at a time: ``.NAME.lock`` is held (``flock``) while a run writes, and a
  second process on the same ``--out`` stops at once with a clear message. The lock goes
  with the process, so a killed run never leaves a stale lock behind (at most an unlocked
  file, which the next run takes over).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pyro_vae.errors import RunDirectoryError
from pyro_vae.training import TRAINING_STATE_FILE

CONFIG_FILE = "config.json"


class RunDirectory:
    """Where one run is written; see the module's rules.

    ``source`` is where a resumed run's state is read from: the partial directory of an
    interrupted run, or the finished run itself (continued in a copy, so that it stays
    whole until the continuation succeeds).
    """

    def __init__(self, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.resume = resume
        self.overwrite = overwrite
        self.partial = self.out.with_name(f".{self.out.name}.partial")
        self.lock_path = self.out.with_name(f".{self.out.name}.lock")
        self.old = self.out.with_name(f".{self.out.name}.old")

    # ------------------------------------------------------------------ checks, no writes

    def check(self) -> RunDirectory:
        """Refuse a location that cannot be used, before any byte is written."""
        if self.out.name in ("", ".", ".."):
            raise RunDirectoryError(f"--out {self.out} names no directory; give a path such as runs/my_run")
        if self.out.exists() and not self.out.is_dir():
            raise RunDirectoryError(f"--out {self.out} is a file, not a directory; choose another --out")
        _check_parent_writable(self.out)
        self._check_not_locked()
        return self._check_contents()

    def _check_contents(self) -> RunDirectory:
        if self.resume:
            self.source  # noqa: B018 (raises when there is nothing to resume)
            return self
        if self.partial.is_dir() and not self.overwrite:
            raise RunDirectoryError(
                f"an interrupted run of {self.out} is in {self.partial}: continue it with --resume, "
                "or start afresh with --overwrite"
            )
        if _non_empty(self.out) and not self.overwrite:
            raise RunDirectoryError(
                f"{self.out} already holds a run ({_listing(self.out)}); pass --overwrite to replace it "
                "(the old run stays until the new one has succeeded), --resume to continue it, or "
                "choose another --out"
            )
        return self

    def _check_not_locked(self) -> None:
        """A run being written by another process is neither interrupted nor finished: say so."""
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun process 0 alone takes the lock, perhaps already
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return  # no lock file: nobody writes (the lock itself is taken later, in lock())
        try:
            try:  # shared: two processes checking at once do not stop each other
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._locked_error(fd) from None
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _locked_error(self, fd: int) -> RunDirectoryError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        return RunDirectoryError(
            f"{self.out} is being written by another pyro-vae process (pid {holder}); wait for it "
            "to finish, or choose another --out"
        )

    @property
    def source(self) -> Path:
        """The directory a resumed run continues from."""
        for candidate in (self.partial, self.out):
            if (candidate / TRAINING_STATE_FILE).is_file() and (candidate / CONFIG_FILE).is_file():
                return candidate
        raise RunDirectoryError(
            f"nothing to resume in {self.out}: no {TRAINING_STATE_FILE} and {CONFIG_FILE} there "
            f"or in {self.partial}; start the run without --resume"
        )

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock; a second process gets a clear error at once.

        The lock file is removed when the run ends; a process that locked a file another one
        had just removed sees that it is no longer the one at the path, and tries again.
        """
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd = self._acquire()
        try:
            self._check_contents()  # another process may have finished a run here since check()
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)
            os.close(fd)  # releases the lock

    def _acquire(self) -> int:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                error = self._locked_error(fd)
                os.close(fd)
                raise error from None
            try:
                if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def prepare(self) -> Path:
        """The working directory: a fresh partial one, the interrupted one, or a copy to continue."""
        if self.resume:
            source = self.source
            if source == self.out:
                _remove(self.partial)
                shutil.copytree(self.out, self.partial)
            return self.partial
        _remove(self.partial)  # only reached with --overwrite when a partial run exists
        self.partial.mkdir(parents=True)
        return self.partial

    def abandon(self) -> None:
        """After a failure: keep a partial run that can be resumed, remove one that cannot."""
        if self.partial.is_dir() and not (self.partial / TRAINING_STATE_FILE).is_file():
            _remove(self.partial)

    def commit(self) -> Path:
        """Move the finished run into place; the old run (if any) is removed only after that."""
        _remove(self.old)
        if self.out.exists():
            os.replace(self.out, self.old)
        os.replace(self.partial, self.out)
        _remove(self.old)
        return self.out


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _listing(path: Path, limit: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _check_parent_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirectoryError(f"cannot create {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"cannot write {out}: no permission to write in {existing}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
