"""Durable file writes and locks: the one place for "write it whole or not at all" and for "one
writer at a time".

- `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: write to a temp file with a
  unique name in the same folder, fsync it, rename it over the target, fsync the folder. A crash at
  any point leaves either the old file or the new one, never a torn one, and two processes writing
  the same path never share a temp file.
- `replace_dir(staging, final)`: the same for a folder built aside (checkpoints, dictionaries,
  dequantized weights): every file in it is fsynced before the rename.
- `exclusive_lock(path)`: a blocking `flock` on `path` (a lock file, created if missing); the
  lock goes with the process, so a killed holder never leaves a stale lock.
- `writer_lock(folder, what)`: the non-blocking variant for output folders: a second writer is
  refused at once with one line naming the folder.
"""

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import InterpError

TMP_MARK = ".tmp-"
WRITER_LOCK_NAME = ".writer.lock"


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def unique_tmp_path(path: Path) -> Path:
    """A temp name beside `path`, unique to this process and call."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (unique tmp, fsync, rename, fsync folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp_path(path)
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, payload: object, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder (deepest first)."""
    folders = [folder]
    for root, dirs, files in os.walk(folder):
        for name in files:
            handle = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        folders.extend(Path(root) / name for name in dirs)
    for each in reversed(folders):
        fsync_dir(each)


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written folder `staging` to `final` durably. `final` must not exist (remove
    or move the old one aside first); both live in the same parent folder."""
    fsync_tree(staging)
    os.rename(staging, final)
    fsync_dir(final.parent)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold a blocking exclusive `flock` on `path`: a lock file (created if missing) or an
    existing folder (locked through its directory handle)."""
    path = Path(path)
    if path.is_dir():
        handle = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


@contextmanager
def writer_lock(folder: Path, what: str = "output folder") -> Iterator[None]:
    """Be the only writer of `folder`: a second process is refused at once with one line."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / WRITER_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InterpError(
                f"another process is writing the {what} {str(folder)!r}: wait for it to finish "
                "(or stop it), then rerun"
            ) from None
        yield
    finally:
        os.close(handle)
