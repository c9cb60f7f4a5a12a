"""Byte sizes as people write them: '4GiB', '512MiB', '16GB', '1048576'. Torch-free."""

from __future__ import annotations

import re

from pabench.errors import ConfigError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    """'4GiB' -> 4294967296. Decimal (GB) and binary (GiB) units; a bare number is bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read size {text!r}; write e.g. 4GiB, 512MiB, 16GB or a number of bytes")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"size must be > 0, got {text!r}")
    return value
