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
  file, which the next run takes over);
* what a killed process leaves is put right by the next command on the same ``--out``, which
  says what it did: a half-written ``.FILE.PID.tmp`` is removed, a move into place that was
  cut short is finished, the replaced run's ``.NAME.old`` copy is removed, and a partial run
  stopped before its first checkpoint (nothing in it to resume) is removed when a new run
  starts. ``--resume`` and a plain run agree on what can be resumed: a partial run holding
  ``training_state.pt`` and ``config.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from pyro_vae.errors import RunDirectoryError
from pyro_vae.infer.training import TRAINING_STATE_FILE
from pyro_vae.io import is_temporary, stale_temporaries

CONFIG_FILE = "config.json"


class RunDirectory:
    """Where one run is written; see the module's rules.

    ``source`` is where a resumed run's state is read from: the partial directory of an
    interrupted run, or the finished run itself (continued in a copy, so that it stays
    whole until the continuation succeeds). ``resumable=False`` is for what cannot be
    continued (a comparison): its messages offer ``--overwrite`` alone, and its partial
    directory is never kept. ``echo`` receives a line for each leftover put right.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        resumable: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.out = Path(out)
        if self.out.name in ("", ".", ".."):  # "." and ".." are directories with names: use them
            self.out = self.out.resolve()
        if not self.out.name:
            raise RunDirectoryError(f"--out {out} names no directory; give a path such as runs/my_run")
        self.resume = resume
        self.overwrite = overwrite
        self.resumable = resumable
        self.echo = echo
        self.partial = self.out.with_name(f".{self.out.name}.partial")
        self.lock_path = self.out.with_name(f".{self.out.name}.lock")
        self.old = self.out.with_name(f".{self.out.name}.old")

    # ------------------------------------------------------------------ checks, no writes

    def check(self) -> RunDirectory:
        """Refuse a location that cannot be used, before any byte is written.

        Leftovers of a killed process (:meth:`recover`) are put right first, as they are part
        of no run: what remains is checked as the killed process would have left it had it
        finished its last move.
        """
        if self.out.exists() and not self.out.is_dir():
            raise RunDirectoryError(f"--out {self.out} is a file, not a directory; choose another --out")
        for place in (self.partial, self.old):
            if place.exists() and not place.is_dir():
                raise RunDirectoryError(
                    f"{place} is in the way of --out {self.out} (a file where pyro-vae keeps a run's "
                    "working copy): move or remove it, or choose another --out"
                )
        _check_parent_writable(self.out)
        self._check_not_locked()
        self.recover()
        return self._check_contents()

    def _resumable(self, directory: Path) -> bool:
        return (directory / TRAINING_STATE_FILE).is_file() and (directory / CONFIG_FILE).is_file()

    def _check_contents(self) -> RunDirectory:
        if self.resume:
            self.source  # noqa: B018 (raises when there is nothing to resume)
            return self
        if self.partial.is_dir() and self.resumable and self._resumable(self.partial) and not self.overwrite:
            raise RunDirectoryError(
                f"an interrupted run of {self.out} is in {self.partial}: continue it with --resume, "
                "or start afresh with --overwrite"
            )
        if _non_empty(self.out) and not self.overwrite:
            resume = ", --resume to continue it," if self.resumable and self._resumable(self.out) else ""
            raise RunDirectoryError(
                f"{self.out} already holds {_holds(self.out)} ({_listing(self.out)}); pass --overwrite to "
                f"replace it (the old one stays until the new run has succeeded){resume} or choose another --out"
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
            if self._resumable(candidate):
                return candidate
        if self.partial.is_dir():
            raise RunDirectoryError(
                f"nothing to resume in {self.out}: the interrupted run in {self.partial} stopped before "
                f"its first checkpoint (no {TRAINING_STATE_FILE}); start the run again without --resume "
                "(which removes that partial run)"
            )
        raise RunDirectoryError(
            f"nothing to resume in {self.out}: no {TRAINING_STATE_FILE} and {CONFIG_FILE} there "
            f"or in {self.partial}; start the run without --resume"
        )

    # ------------------------------------------------------------------ leftovers

    def recover(self) -> None:
        """Put right what a killed process left (each said through ``echo``); called by :meth:`check`
        once no process holds the lock, so none of it belongs to a run being written."""
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun process 0 alone writes
        if self.old.is_dir():
            if self.out.exists():
                _remove(self.old)
                self.echo(
                    f"removed {self.old}: the replaced run, left when a process was stopped just after "
                    f"moving its new run into {self.out}"
                )
            elif self.partial.is_dir():
                os.replace(self.partial, self.out)
                _remove(self.old)
                self.echo(f"finished moving the run into {self.out}: its process was stopped during the move")
            else:
                os.replace(self.old, self.out)
                self.echo(f"restored {self.out} from {self.old}: its process was stopped while replacing it")
        for directory in (self.out, self.partial):
            for tmp in stale_temporaries(directory):
                tmp.unlink(missing_ok=True)
                self.echo(f"removed {tmp}: half a file, left when the process writing it was stopped")
        if (
            self.partial.is_dir()
            and not (self.resumable and self._resumable(self.partial))
            and not self.resume
        ):
            _remove(self.partial)
            self.echo(
                f"removed {self.partial}: an interrupted run stopped before its first checkpoint "
                "(nothing in it to resume)"
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
                # another process's temporary files are its own (it may be writing them now)
                shutil.copytree(
                    self.out, self.partial, ignore=lambda d, names: [n for n in names if is_temporary(n)]
                )
            return self.partial
        _remove(self.partial)  # only reached with --overwrite when a partial run exists
        self.partial.mkdir(parents=True)
        return self.partial

    def abandon(self) -> None:
        """After a failure: keep a partial run that can be resumed, remove one that cannot."""
        if self.partial.is_dir() and not (self.resumable and self._resumable(self.partial)):
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


def _holds(path: Path) -> str:
    """What an existing ``--out`` holds, in words: a run, a comparison, or files of the user's."""
    if (path / CONFIG_FILE).is_file():
        return "a run"
    if (path / "comparison.json").is_file():
        return "a comparison"
    return "files"


def _listing(path: Path, limit: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _check_parent_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirectoryError(
            f"cannot create {out}: {existing} is a file, not a directory; choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirectoryError(
            f"cannot write {out}: no permission to write in {existing}; choose another --out or change its permissions"
        )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def check_output_file(path: str | Path, flag: str, keys: tuple[str, ...]) -> None:
    """Refuse an output file (``flag``, such as ``--output``) that would change what a run or a
    user made, before any work: one inside a run directory (it would change the run's record),
    a directory, or an existing file that is not an earlier output of the same command (a JSON
    object holding ``keys``); an earlier output is replaced, as rerunning the command means."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if (parent / CONFIG_FILE).is_file() and (parent / "model.pt").is_file():
        raise RunDirectoryError(
            f"{flag} {path} is inside the run directory {parent}: writing there would change the run's "
            f"record; choose a path outside it"
        )
    if path.is_dir():
        raise RunDirectoryError(
            f"{flag} {path} is a directory; give a file path, such as {path / 'metrics.json'}"
        )
    if path.exists() and not _holds_keys(path, keys):
        raise RunDirectoryError(
            f"{flag} {path} exists and was not written by this command; choose another {flag} "
            "(pyro-vae never overwrites a file it did not write)"
        )
    _check_parent_writable(path)


def _holds_keys(path: Path, keys: tuple[str, ...]) -> bool:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in keys)
