"""Atomic output files: a reader (or a later run) sees the old file or the new one, never a torn one.

Every output cosim writes (Parquet of ``-o``, JSON summaries, ``step.pb``, Chakra ET files, the
HTML reports and their figures) goes through this module: the bytes are written to a temporary
file in the *same* directory (``.NAME.PID.RANDOM.tmp``), flushed and ``fsync``-ed, then
``os.replace``-d onto the final name (atomic on POSIX within one file system), and the directory
is ``fsync``-ed so the rename survives a power cut. If the writer is killed (SIGKILL, OOM, power)
before the rename, the final name still holds the earlier result; only a hidden ``.tmp`` file is
left behind, which :func:`remove_stale_temporaries` clears on the next write.

Before a long simulation the CLI checks its output paths with :func:`check_output_file` and
:func:`check_output_dir`, so a typo in ``-o`` fails in a millisecond, not after the run.

Public API: :func:`atomic_path`, :func:`atomic_write_bytes`, :func:`atomic_write_text`,
:func:`check_output_file`, :func:`check_output_dir`, :func:`remove_stale_temporaries`,
:class:`OutputPathError`.
"""

from __future__ import annotations

import errno
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cosim.errors import CosimError

__all__ = ["OutputPathError", "atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output_dir",
           "check_output_file", "remove_stale_temporaries"]

#: Longest file name (bytes) accepted for an output; POSIX file systems allow 255.
MAX_FILE_NAME_BYTES = 255
#: Longest path (characters) of an output shown in full in an error message.
_SHOW_PATH_CHARS = 200


class OutputPathError(CosimError):
    """An output path cannot be written (its folder is a file, not writable, the name too long ...)."""

    def __init__(self, option: str, path: str | Path, message: str):
        self.option = option
        self.path = str(path)
        self.message = message
        prefix = f"{option}: " if option else ""
        super().__init__(f"{prefix}{show_path(path)}: {message}")


def show_path(path: str | Path) -> str:
    """``path`` as text, cut to a bounded length for messages."""
    text = str(path)
    if len(text) > _SHOW_PATH_CHARS:
        return f"{text[:_SHOW_PATH_CHARS]}... ({len(text):,} chars)"
    return text


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (ignored where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, make_parents: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name (``pq.write_table``,
    ``fig.savefig`` ...); on a normal exit the file is fsync-ed and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was::

        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); return ``path``."""
    path = Path(path)
    with atomic_path(path, make_parents=make_parents) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", make_parents: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`); return ``path``."""
    return atomic_write_bytes(path, text.encode(encoding), make_parents=make_parents)


def remove_stale_temporaries(folder: str | Path, name: str) -> int:
    """Remove temporary files of :func:`atomic_path` for ``folder/name`` left by writers that were
    killed and whose process is gone; return how many were removed."""
    folder = Path(folder)
    removed = 0
    try:
        candidates = list(folder.glob(f".{name}.*.tmp"))
    except OSError:
        return 0
    for tmp in candidates:
        parts = tmp.name[len(name) + 2:].split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


# --- checks before a run ----------------------------------------------------------------------

def _first_existing(folder: Path) -> Path:
    """The nearest ancestor of ``folder`` (itself included) that exists."""
    p = folder
    while True:
        try:
            if p.exists() or p.is_symlink():
                return p
        except OSError:
            pass
        if p.parent == p:
            return p
        p = p.parent


def _check_names(option: str, path: Path) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_FILE_NAME_BYTES:
            raise OutputPathError(option, path, f"a path component has {len(os.fsencode(part)):,} bytes; "
                                                f"file names are limited to {MAX_FILE_NAME_BYTES} bytes")
    if "\x00" in str(path):
        raise OutputPathError(option, path, "the path contains a NUL character")


def _check_folder(option: str, path: Path, folder: Path) -> None:
    """``folder`` (the parent of the output) is a writable directory or can be created."""
    base = _first_existing(folder)
    try:
        is_dir = base.is_dir()
    except OSError as exc:
        raise OutputPathError(option, path, f"cannot inspect {show_path(base)} ({exc.strerror})") from None
    if not is_dir:
        raise OutputPathError(option, path, f"{show_path(base)} is a file, not a folder; the output cannot "
                                            f"be written below it")
    what = "folder" if base == folder else f"folder {show_path(base)} (where {show_path(folder)} would be created)"
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(option, path, f"the {what} is not writable")
    _probe(option, path, base, what)


def _probe(option: str, path: Path, folder: Path, what: str) -> None:
    """Create and remove a temporary file in ``folder``: catches what ``os.access`` does not
    (read-only mounts, /proc, quotas)."""
    probe = folder / f".cosim-probe.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputPathError(option, path, f"cannot create files in the {what} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        probe.unlink()
    except OSError:
        pass


def check_output_file(path: str | Path | None, option: str = "") -> Path | None:
    """Check, before any simulation, that a file can be written at ``path``: it is not a folder,
    its name is not too long, and its folder is writable or can be created under a writable one.

    Raises :class:`OutputPathError` naming ``option`` (e.g. ``"--out"``); ``None`` passes.
    """
    if path is None:
        return None
    path = Path(path)
    _check_names(option, path)
    if str(path) in ("", ".") or path.name in ("", ".", ".."):
        raise OutputPathError(option, path, "expected a file path, got a folder")
    try:
        if path.is_dir():
            raise OutputPathError(option, path, "is a folder; expected a file path")
        if path.exists() and not path.is_file():
            raise OutputPathError(option, path, "exists and is not a regular file")
    except OSError as exc:
        if isinstance(exc, OutputPathError):
            raise
        raise OutputPathError(option, path, f"cannot inspect the path ({exc.strerror or exc})") from None
    _check_folder(option, path, path.parent)
    return path


def check_output_dir(path: str | Path | None, option: str = "") -> Path | None:
    """Check, before any simulation, that ``path`` is a writable folder or can be created.

    Raises :class:`OutputPathError` naming ``option``; ``None`` passes.
    """
    if path is None:
        return None
    path = Path(path)
    _check_names(option, path)
    try:
        exists = path.exists()
        if exists and not path.is_dir():
            raise OutputPathError(option, path, "is a file; expected a folder")
    except OSError as exc:
        if isinstance(exc, OutputPathError):
            raise
        raise OutputPathError(option, path, f"cannot inspect the path ({exc.strerror or exc})") from None
    if exists:
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(option, path, "the folder is not writable")
        _probe(option, path, path, "folder")
    else:
        _check_folder(option, path, path.parent)
    return path


def describe_os_error(exc: OSError) -> str:
    """A one-line message for an :class:`OSError` (disk full, permission denied, name too long ...)."""
    reason = exc.strerror or (errno.errorcode.get(exc.errno, "") if exc.errno else "") or str(exc)
    where = f": {show_path(exc.filename)}" if exc.filename else ""
    return f"{reason}{where}"
