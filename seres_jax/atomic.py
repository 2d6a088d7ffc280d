"""Crash-safe writes: a file or directory appears at its destination complete, or not at all.

**Staging.** ``staged_path(dst)`` yields a path inside a fresh staging directory beside ``dst``,
named ``.<dst name>.seres-staging-<random>``; whatever the caller writes there is fsync'ed and
moved onto ``dst`` only when the caller's block completes, and the staging directory is removed
in every case.

**Replacing.** A file (or a new directory) moves in with one ``rename``. A directory replaces an
existing one by ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+ on ext4, xfs, btrfs, tmpfs, ...):
old and new swap names in one step, so a complete destination exists at every instant. Where the
exchange is unsupported (other systems, some network file systems), the old directory is first
renamed into the staging directory (as ``replaced``) and the new one renamed into place; a crash
between the two leaves the old one there, and the next ``staged_path`` or ``sweep`` beside the
destination renames it back.

**Destinations.** ``check_destination`` is the policy: an existing destination is replaced only
with ``force``; a file replaces only a file, a directory only a directory that ``replaceable``
accepts; and never a destination that is, or contains, ``protect`` (the source being converted).
Violations raise ``DestinationError``; failures of the file system itself are ``OSError``.

**Leftovers.** A writer holds an exclusive ``flock`` on the ``.lock`` file in its staging
directory from before the directory gets its ``seres-staging`` name until it is removed; the
kernel releases the lock when the process dies, however it dies (``kill -9`` included).
``sweep(parent)`` — run by every ``staged_path`` before it stages — removes the staging
directories in ``parent`` whose lock it can take, i.e. whose writer is dead, and never one whose
writer is alive. Where the file system cannot lock, nothing is swept. (A writer killed in the
instant between creating its directory and locking it leaves a ``.<name>.seres-init-*``
directory holding an empty ``.lock``, which nothing removes.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

STAGING_MARK = ".seres-staging-"
"""The mark of a staging directory's name (``.<dst name>.seres-staging-<random>``): ``sweep`` looks
only at hidden entries holding it, and ``seres_jax.train`` counts such entries beside its own
files as a run's."""
_INIT_MARK = ".seres-init-"
_LOCK = ".lock"
_REPLACED = "replaced"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

Replaceable = Callable[[Path], "str | None"]
"""A ``replaceable`` policy: given an existing destination directory, ``None`` to accept it,
or why not, as a phrase the ``DestinationError`` puts after the path (``"is not a pack"``)."""


class DestinationError(Exception):
    """A destination seres may not write; the message says why and what to do."""


def _contains(outer: Path, inner: Path) -> bool:
    outer, inner = outer.resolve(), inner.resolve()
    return inner == outer or outer in inner.parents


def check_destination(
    dst: Path,
    *,
    force: bool,
    directory: bool = False,
    replaceable: Replaceable | None = None,
    protect: Path | None = None,
) -> None:
    """Raise ``DestinationError`` unless writing ``dst`` is allowed (see the module docstring).

    ``replaceable(existing_dir)`` returns ``None`` to accept a directory, or why not.
    """
    if protect is not None and os.path.lexists(dst) and _contains(dst, protect):
        what = "is" if dst.resolve() == protect.resolve() else "contains"
        raise DestinationError(f"{dst} {what} the source {protect}; refusing to replace it")
    if dst.parent.exists() and not dst.parent.is_dir():
        raise DestinationError(f"cannot write {dst}: {dst.parent} is not a directory")
    if not os.path.lexists(dst):
        return
    is_dir = dst.is_dir() and not dst.is_symlink()
    if not directory and dst.is_dir():
        raise DestinationError(f"{dst} is a directory; refusing to replace it with a file")
    if directory and not is_dir:
        raise DestinationError(f"{dst} is not a directory; refusing to replace it with one")
    if directory and replaceable is not None:
        reason = replaceable(dst)
        if reason:
            raise DestinationError(f"{dst} {reason}; refusing to replace it")
    if not force:
        raise DestinationError(f"{dst} exists; pass --force to replace it")


@contextlib.contextmanager
def staged_path(
    dst: str | os.PathLike[str],
    *,
    force: bool = False,
    directory: bool = False,
    replaceable: Replaceable | None = None,
    protect: Path | None = None,
) -> Iterator[Path]:
    """Yield a path in a staging directory beside ``dst``; move it onto ``dst`` on success.

    ``dst`` is checked (``check_destination``) before anything is written and again just
    before it is replaced; on any failure ``dst`` is left as it was.
    """
    target = Path(dst)

    def check() -> None:
        check_destination(
            target, force=force, directory=directory, replaceable=replaceable, protect=protect
        )

    check()
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent)
    staging, lock = _make_staging(target)
    try:
        tmp = staging / target.name
        yield tmp
        check()  # it may have changed while we were writing
        _fsync_tree(tmp)
        _move_into_place(tmp, target, staging)
        _fsync(target.parent)
    finally:
        _remove_tree(staging)
        os.close(lock)  # only now: a sweeper never finds our directory unlocked


def _remove_tree(path: Path, attempts: int = 20) -> None:
    """Remove our own staging directory, retrying while it is still non-empty: after a failed
    write a library's worker threads (orbax's, tensorstore's) can still be closing files in it
    when the error reaches us, and one pass of ``rmtree`` then leaves it behind."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.05)


def _make_staging(target: Path) -> tuple[Path, int]:
    """A staging directory for ``target``, its lock held before it gets its staging name (so a
    sweeper never sees one that is not locked yet); returns it and the lock's descriptor."""
    init = Path(tempfile.mkdtemp(prefix=f".{target.name}{_INIT_MARK}", dir=target.parent))
    try:
        lock = os.open(init / _LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        shutil.rmtree(init, ignore_errors=True)
        raise
    try:
        with contextlib.suppress(OSError):
            # Where the file system cannot lock (some network ones), nothing is swept: a
            # sweeper cannot take the lock either.
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        staging = init.with_name(init.name.replace(_INIT_MARK, STAGING_MARK, 1))
        os.rename(init, staging)
    except OSError:
        os.close(lock)
        shutil.rmtree(init, ignore_errors=True)
        raise
    return staging, lock


def _move_into_place(tmp: Path, target: Path, staging: Path) -> None:
    if not (target.is_dir() and not target.is_symlink()):
        os.replace(tmp, target)  # one rename: the old file (if any) or the new one, never none
    elif not _exchange(tmp, target):
        replaced = staging / _REPLACED
        os.rename(target, replaced)  # a crash from here until the next rename: see sweep()
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(replaced, target)
            raise
    # After an exchange the old directory sits at `tmp`, removed with the staging directory.


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); ``False`` where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush ``path`` (a file, or a directory and everything in it) to disk before renaming it:
    otherwise a power cut soon after the rename can leave an empty or partial destination."""
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync(Path(root, name))
            _fsync(Path(root))
    else:
        _fsync(path)


def sweep(parent: Path) -> None:
    """Remove the staging directories in ``parent`` whose writer is dead; first move back a
    destination such a writer had renamed away and not yet replaced (see the module docstring).
    """
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") and STAGING_MARK in entry.name:
            with contextlib.suppress(OSError):
                _reap(Path(entry.path))


def _reap(staging: Path) -> None:
    target = staging.name[1 : staging.name.rindex(STAGING_MARK)]
    if target in ("", ".", ".."):
        return  # not a name staged_path gives
    lock = os.open(staging / _LOCK, os.O_RDWR | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is alive
        replaced, destination = staging / _REPLACED, staging.parent / target
        if os.path.lexists(replaced) and not os.path.lexists(destination):
            os.rename(replaced, destination)
        shutil.rmtree(staging)
    finally:
        os.close(lock)
