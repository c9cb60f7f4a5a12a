"""Byte sizes as people write them ('4GiB', '512MiB', '16GB', '1048576') and as pabench prints them. Torch-free."""

from __future__ import annotations

import math
import operator
import os
import re

from pabench.errors import ConfigError

KIB, MIB, GIB, TIB = 2**10, 2**20, 2**30, 2**40
MAX_PAGE_SIZE = 256  # tokens; the Triton decode kernel's tile limits and the backends share it
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


def format_bytes(num_bytes: float | None, *, exact: bool = False, sep: str = " ") -> str:
    """'1.50 GiB', '64.0 MiB', '512.0 KiB', '0 B' (tables); exact=True: '16 GiB', '1.5 GiB', as a size is typed
    (sweep labels). None or NaN: '–'."""
    if num_bytes is None or (isinstance(num_bytes, float) and math.isnan(num_bytes)):
        return "–"
    for unit, size, digits in (("TiB", TIB, 2), ("GiB", GIB, 2), ("MiB", MIB, 1), ("KiB", KIB, 1)):
        if abs(num_bytes) >= size:
            return f"{num_bytes / size:g}{sep}{unit}" if exact else f"{num_bytes / size:.{digits}f}{sep}{unit}"
    return f"{num_bytes:g}{sep}B" if exact else f"{num_bytes:.0f}{sep}B"


def check_page_size(page_size: int, what: str = "page size") -> int:
    """The one page-size rule (paged backends, the kernels, run, sweep, kernels): a power of two in [1, 256]."""
    try:
        value = operator.index(page_size)
    except TypeError:
        value = 0
    if value < 1 or value > MAX_PAGE_SIZE or value & (value - 1):
        raise ConfigError(f"{what} must be a power of two in [1, {MAX_PAGE_SIZE}], got {page_size}")
    return value


KV_DTYPES = ("auto", "fp8")  # --kv-dtype: auto = the model's dtype; fp8 = e4m3 with per-tensor scales


def check_kv_dtype(name: str) -> str:
    """Validate a `--kv-dtype` value (one line on bad input)."""
    if name not in KV_DTYPES:
        raise ConfigError(f"kv dtype must be one of {', '.join(KV_DTYPES)}, got {name!r}")
    return name


MAX_SEED = 2**63 - 1  # numpy takes any seed >= 0, torch any below 2**64; exports store the seed as int64


def check_seed(seed: int, what: str = "seed") -> int:
    """The one seed rule (workloads, TOML, --seed, model weights): an integer in [0, 2**63 - 1]."""
    try:
        value = operator.index(seed)
    except TypeError:
        value = -1
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{what} must be an integer in [0, 2**63 - 1 = {MAX_SEED}], got {seed!r}")
    return value


def host_available_bytes() -> int:
    """Memory the host can give without swapping: /proc/meminfo MemAvailable, else free pages (no psutil)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
