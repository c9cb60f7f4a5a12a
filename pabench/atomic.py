"""Where results go: output paths checked before a run starts, and writes that never leave half a file.

A regular file (or an absent one) is replaced atomically: the bytes go to a temporary file beside it (same
filesystem), are flushed to disk, then `os.replace` swaps them in; any failure removes the temporary file and
leaves the old one untouched. A symlink is followed and its target replaced, so `latest.csv -> runs/7.csv`
updates `runs/7.csv` and keeps the link. A character device (`/dev/null`, a tty) or a FIFO is written
through, never replaced, and `-` means stdout. Anything else (a directory, a block device, a socket) is refused.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from pabench.errors import ConfigError, OutputError

STDOUT = "-"  # the output path that means "write to standard output"


def output_kind(st: os.stat_result | None) -> str:
    """How an output path is written, from `os.stat` of its (symlink-resolved) target, or None when absent:
    'replace' (a regular file or nothing: atomic replace), 'stream' (character device or FIFO: written
    through) or 'refuse' (a directory, block device or socket)."""
    if st is None or stat.S_ISREG(st.st_mode):
        return "replace"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return "stream"
    return "refuse"


def _what(st: os.stat_result) -> str:
    """'a directory', 'a block device', ... for a refused target."""
    mode = st.st_mode
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: str) -> os.stat_result | None:
    """`os.stat` following symlinks; None when nothing (or a dangling link) is there."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_output_path(path: str | os.PathLike[str], option: str = "output") -> None:
    """Raise ConfigError (one line naming `option` and the user's path) unless `path` can be written: not empty,
    not a directory, its nearest existing ancestor a writable directory on a writable filesystem."""
    text = os.fspath(path)
    if not text.strip():
        raise ConfigError(f"{option}: empty path; give a file name such as results.csv")
    if text == STDOUT:
        return
    where = f"{option} {text}"
    if text.endswith(os.sep):
        raise ConfigError(f"{where}: names a directory; give a file name inside it")
    st = _stat(text)  # follows symlinks, /proc's magic ones (/dev/stdout -> pipe:[123]) included
    real = os.path.realpath(text)  # a symlink's target is what gets replaced
    if st is not None and output_kind(st) == "refuse":
        hint = "; give a file name inside it" if stat.S_ISDIR(st.st_mode) else ""
        raise ConfigError(f"{where}: is {_what(st)}{hint}")
    if st is not None and output_kind(st) == "stream":
        if not os.access(text, os.W_OK):
            raise ConfigError(f"{where}: not writable")
        return
    parent = _writable_ancestor(where, os.path.dirname(real))
    if st is not None and not os.access(real, os.W_OK):
        raise ConfigError(f"{where}: permission denied (cannot write in {parent})")


def _writable_ancestor(where: str, path: str) -> str:
    """The nearest existing ancestor of `path` (itself included); ConfigError unless it is a writable directory
    on a writable filesystem (the missing directories below it are created at write time)."""
    parent = path
    while _stat(parent) is None:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{where}: {parent} is not a directory")
    if _read_only_fs(parent):
        raise ConfigError(f"{where}: {parent} is on a read-only filesystem")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: permission denied (cannot write in {parent})")
    return parent


def check_output_dir(path: str | os.PathLike[str], option: str = "output") -> None:
    """Raise ConfigError (one line naming `option` and the path) unless `path` is a directory pabench can write
    files in, or one it can create (its nearest existing ancestor a writable directory)."""
    text = os.fspath(path)
    if not text.strip() or text == STDOUT:
        raise ConfigError(f"{option}: {'empty path' if not text.strip() else '- (stdout)'}: give a directory")
    _writable_ancestor(f"{option} {text}", os.path.realpath(text))


def _identity(text: str) -> tuple:
    """What two output paths must not share: stdout, the same existing file, or the same path to be created."""
    if text == STDOUT:
        return ("stdout",)
    st = _stat(text)
    return ("file", st.st_dev, st.st_ino) if st is not None else ("path", os.path.realpath(text))


def check_outputs(outputs: dict[str, str | os.PathLike[str] | None],
                  inputs: dict[str, str | os.PathLike[str]] | None = None) -> None:
    """Check every given output (`{"--csv": path, ...}`, None = not asked for) before any work starts, and
    that no two outputs, and no output and input, name the same file (character devices such as /dev/null
    excepted). One ConfigError line naming the options."""
    seen: dict[tuple, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        check_output_path(path, option)
        text = os.fspath(path)
        st = _stat(text) if text != STDOUT else None
        if st is not None and stat.S_ISCHR(st.st_mode):
            continue  # /dev/null twice is harmless
        key = _identity(text)
        if key in seen:
            same = "both write to stdout" if text == STDOUT else f"name the same file {text}"
            raise ConfigError(f"{seen[key]} and {option} {same}; give each its own path")
        seen[key] = option
    for option, path in (inputs or {}).items():
        key = _identity(os.fspath(path))
        if key in seen:
            raise ConfigError(f"{seen[key]} would overwrite its input {os.fspath(path)} ({option}); "
                              "give the output another path")


def _file_mode(target: str) -> int:
    """The replaced file's mode, or what `open()` would create under the current umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _replace(target: str, data: bytes) -> None:
    """Atomic replace of the regular file (or nothing) at `target` (symlinks already resolved)."""
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=os.path.dirname(target) or ".", prefix=f".{os.path.basename(target)}.",
                                    suffix=".tmp")
    try:
        os.chmod(tmp_name, _file_mode(target))  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def _stream(target: str, data: bytes) -> None:
    """Write through to a character device or FIFO: opened for writing, never created, truncated or replaced."""
    fd = os.open(target, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` as the module docstring says; returns the path written (the symlink's target for
    a link, `-` for stdout). Failures raise OutputError naming the user's path, never the temporary file."""
    text = os.fspath(path)
    if text == STDOUT:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return Path(STDOUT)
    st = _stat(text)
    kind = output_kind(st)
    # A stream is opened by the given name (/dev/stdout's target, pipe:[123], is no path); a file is replaced
    # at its symlink-resolved path, so the link survives and its target gets the new bytes.
    real = text if kind == "stream" else os.path.realpath(text)
    try:
        if kind == "refuse":
            raise OutputError(f"cannot write {text}: it is {_what(st)}")
        (_stream if kind == "stream" else _replace)(real, data)
    except OSError as error:
        raise OutputError(f"cannot write {text}: {error.strerror or error}") from None
    return Path(real)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))
