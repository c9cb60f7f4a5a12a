"""Atomic file writes: a reader sees the old file or the whole new one, never a half-written export.

The text goes to a temporary file in the target's directory (same filesystem), is flushed to disk, then
`os.replace` swaps it in. Any exception on the way removes the temporary file and leaves the target untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _file_mode(target: Path) -> int:
    """The replaced file's mode, or what `open()` would create under the current umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically, creating parent directories; returns the resolved path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
    return target.resolve()


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))
