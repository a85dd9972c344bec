"""Put a finished build in place of OUT without ever losing the previous one.

A build is written into `.OUT.building-XXXXXXXX` beside OUT and swapped in at the end:
- Linux: one `renameat2(RENAME_EXCHANGE)`, atomic; the old build is then deleted from the scratch name.
- elsewhere: OUT -> `.OUT.old-XXXXXXXX`, scratch -> OUT, delete the old (OUT is briefly absent).
A run killed at any point leaves OUT as the old or the new build, plus leftovers that the next build
of OUT cleans up first, saying what it did (`recover`). A lock file beside OUT keeps two builds of the
same OUT apart, so one never deletes the other's scratch folder.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hivtp.build.manifest import listed_files
from hivtp.outputs import Listing


def _leftovers(output: Path, kind: str) -> list[Path]:
    """Scratch ('building') or displaced ('old') folders of OUT, newest first."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.{kind}-[A-Za-z0-9_]{{8}}")
    found = [p for p in output.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _is_complete(folder: Path, listed: Listing) -> bool:
    try:
        listed(folder)
    except ValueError:
        return False
    return True


def note(message: str) -> None:
    print(f"hivtp: note: {message}", file=sys.stderr)


def recover(output: Path, listed: Listing = listed_files) -> None:
    """Clean up after an interrupted build of OUT: restore a displaced old build, delete scratch folders."""
    if not output.parent.is_dir():
        return
    old = _leftovers(output, "old")
    if not output.exists() and not output.is_symlink():
        complete = [p for p in old if _is_complete(p, listed)]
        if complete:
            complete[0].rename(output)
            old.remove(complete[0])
            note(f"restored the previous build at {output}: the run that was replacing it was interrupted")
    for folder in _leftovers(output, "building") + old:
        shutil.rmtree(folder, ignore_errors=True)
        note(f"removed {folder.name}, left by an interrupted build of {output.name}")


@contextmanager
def build_lock(output: Path) -> Iterator[None]:
    """Exclusive, non-blocking: a second build of the same OUT fails with one line instead of racing."""
    lock_path = output.with_name(f".{output.name}.lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another hivtp build is writing {output} right now") from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _put_in_place(work: Path, output: Path) -> None:
    if not output.exists():
        work.rename(output)
    elif exchange(work, output):
        shutil.rmtree(work)  # now the old build; if killed here, the next build removes the rest
    else:
        old = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
        output.rename(old)
        work.rename(output)
        shutil.rmtree(old)


@contextmanager
def staging(output: Path, force: bool, listed: Listing = listed_files) -> Iterator[Path]:
    """A scratch folder beside OUT; swapped into place on success, deleted on any failure.

    The caller has checked OUT (hivtp.outputs.check_owned_output); recovery may bring an old output
    back, so the --force rule is applied once more after it. `listed` tells a complete output (a build's
    manifest by default, a model repository's listing for `hivtp serve`).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(output):
        recover(output, listed)
        if output.exists() and not force:
            raise ValueError(f"{output} exists: pass --force to replace an earlier hivtp build")
        work = Path(tempfile.mkdtemp(prefix=f".{output.name}.building-", dir=output.parent))
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; OUT should get the usual permissions
        try:
            yield work
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _put_in_place(work, output)
