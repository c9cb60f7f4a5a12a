"""The ground floor's size rules: parsing and printing bytes, and the one page-size rule."""

import numpy as np
import pytest

from pabench.errors import ConfigError
from pabench.units import check_page_size, format_bytes, parse_size


@pytest.mark.parametrize("size", [1, 2, 16, 256, np.int64(32)])
def test_page_sizes_that_are_powers_of_two_up_to_256_pass(size):
    assert check_page_size(size) == int(size)


@pytest.mark.parametrize("size", [0, -16, 3, 12, 512, 16.0, "16", None])
def test_other_page_sizes_are_one_clear_error(size):
    with pytest.raises(ConfigError, match=r"page size must be a power of two in \[1, 256\]"):
        check_page_size(size)


def test_format_bytes_for_tables_and_as_typed():
    assert format_bytes(1.5 * 2**30) == "1.50 GiB" and format_bytes(1.5 * 2**30, exact=True) == "1.5 GiB"
    assert format_bytes(64 * 2**20, exact=True, sep="") == "64MiB" and format_bytes(100) == "100 B"
    assert format_bytes(None) == format_bytes(float("nan")) == "–"
    assert parse_size(format_bytes(48 * 2**20, exact=True, sep="")) == 48 * 2**20


def test_format_bytes_reaches_tebibytes():
    from pabench.units import format_bytes

    assert format_bytes(100 * 2**40) == "100.00 TiB" and format_bytes(2 * 2**40, exact=True) == "2 TiB"
