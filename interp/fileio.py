"""Durable file writes and locks: the one place for "write it whole or not at all" and for "one
writer at a time".

- `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json` / `atomic_write_jsonl`: write
  to a temp file with a unique name in the same folder, fsync it, rename it over the target, fsync
  the folder. A crash at any point leaves either the old file or the new one, never a torn one, and
  two processes writing the same path never share a temp file. `atomic_output(path)` is the same
  for writers that take a file name (parquet, safetensors), `atomic_save_png` for figures.
  `read_json` reads one back.
- `replace_dir(staging, final)`: the same for a folder built aside (checkpoints, dictionaries,
  dequantized weights): every file in it is fsynced before the rename.
- `exclusive_lock(path)`: a blocking `flock` on `path` (a lock file, created if missing); the
  lock goes with the process, so a killed holder never leaves a stale lock.
- `writer_lock(folder, what)`: the non-blocking variant for output folders: a second writer is
  refused at once with one line naming the folder.
- `guard_config(config_path, wanted, overwrite, what)`: the one rule "a folder holding results of
  a different config is refused unless told (`--overwrite`)", with one line naming the keys.
"""

import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from interp.errors import InterpError

TMP_MARK = ".tmp-"
WRITER_LOCK_NAME = ".writer.lock"


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fsync_path(folder)


def unique_tmp_path(path: Path) -> Path:
    """A temp name beside `path`, unique to this process and call."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) content to disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path beside `path` for a writer that takes a file name; on a clean exit it is
    fsynced and renamed over `path` (then the folder fsynced), on an error removed. The temp name
    does not end in `path`'s suffix: writers that guess the format from it need it given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (unique tmp, fsync, rename, fsync folder)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, payload: object, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def atomic_save_png(figure: Any, path: Path, **options: Any) -> None:
    """A matplotlib figure (anything with `savefig`) saved as PNG whole or not at all."""
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", **options)


def atomic_write_jsonl(path: Path, rows: Iterable[object]) -> None:
    """One JSON document per line, the whole file at once."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"{str(path)!r} does not exist: expected a JSON file")
    return json.loads(path.read_text())


def guard_config(
    config_path: Path,
    wanted: Mapping[str, Any],
    overwrite: bool,
    what: str = "results",
    previous: Mapping[str, Any] | None = None,
    explain: Callable[[], str] | None = None,
    recorded_before: Mapping[str, Any] | None = None,
) -> bool:
    """Refuse to write into a folder whose `config_path` records a different config, unless
    `overwrite`. `previous` overrides what is read from `config_path` (a caller that normalises the
    saved config first); `explain` words the refusal (a caller that can say more than which keys
    differ, e.g. the cache: which option, other weights, another token stream). True when a
    different config is there and `overwrite` replaces it: the caller removes that config's
    results. `recorded_before`: keys a config written before they existed lacks, with the value
    it meant (e.g. `model_dtype`: float32). Nothing is written here."""
    config_path = Path(config_path)
    if previous is None:
        if not config_path.is_file():
            return False
        previous = read_json(config_path)
    if recorded_before and isinstance(previous, Mapping):
        previous = {**recorded_before, **previous}
    as_saved = json.loads(json.dumps(wanted))  # tuples -> lists, as the saved file has them
    previous = json.loads(json.dumps(previous))
    if previous == as_saved:
        return False
    if overwrite:
        return True
    if explain is not None:
        raise InterpError(explain())
    if isinstance(previous, dict) and isinstance(as_saved, dict):
        keys = [
            _difference(key, previous, as_saved)
            for key in sorted(previous.keys() | as_saved.keys())
            if previous.get(key) != as_saved.get(key)
        ]
    else:
        keys = ["the whole config"]
    raise InterpError(
        f"{str(config_path.parent)!r} holds {what} with a different config (differing: "
        f"{', '.join(keys)}): pass --overwrite to replace it, or choose another folder"
    )


def _difference(key: str, previous: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """`key`, with both values where both configs hold a plain one (what to pass to resume)."""
    scalars = (str, int, float, bool)
    if isinstance(previous.get(key), scalars) and isinstance(wanted.get(key), scalars):
        return f"{key} (recorded {previous[key]!r}, now {wanted[key]!r})"
    return key


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder (deepest first)."""
    folders = [folder]
    for root, dirs, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
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
