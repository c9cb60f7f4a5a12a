"""The memory check `prepare` runs before allocating: weights + rotary tables + block table + KV pool."""

from dataclasses import replace

import pytest

from pabench.bench.budget import block_table_bytes, check_fits_memory, rope_table_bytes
from pabench.bench.runner import RunConfig
from pabench.engine.model import ModelConfig
from pabench.errors import ConfigError
from pabench.units import GIB, host_available_bytes

TINY = ModelConfig.from_name("tiny")
BPT = 4096  # tiny's KV bytes per token in fp32
CFG = RunConfig(device="cpu", model="tiny", dtype="fp32", max_num_seqs=32, max_model_len=1024, warmup=False,
                cuda_graphs=False)


def test_host_available_memory_is_read_without_psutil():
    assert 0 < host_available_bytes() < 2**60


def test_table_sizes():
    assert rope_table_bytes(1023, 64) == 3 * 1024 * 32 * 4
    assert block_table_bytes(32, 1000, 16) == 33 * 63 * 4


def test_a_budget_that_fits_passes_and_one_that_does_not_says_by_how_much():
    check_fits_memory(CFG, TINY, BPT, GIB, "", available=2 * GIB)
    with pytest.raises(ConfigError, match=r"^KV budget 3.00 GiB > 2.00 GiB available on cpu; give a smaller"):
        check_fits_memory(CFG, TINY, BPT, 3 * GIB, "", available=2 * GIB)


def test_cuda_keeps_room_for_two_pools_and_counts_the_weights():
    cuda = replace(CFG, device="cuda")
    with pytest.raises(ConfigError, match=r"KV budget 1.50 GiB > 1.00 GiB free on cuda \(half the free memory"):
        check_fits_memory(cuda, TINY, BPT, 3 * GIB // 2, "", available=2 * GIB)
    big = ModelConfig.from_name("llama-3-8b")
    with pytest.raises(ConfigError, match=r"^model llama-3-8b \(32 layers, 14.96 GiB of weights\) \+ 2x the KV"):
        check_fits_memory(replace(cuda, dtype="bf16"), big, BPT, GIB, "", available=16 * GIB)
    check_fits_memory(replace(cuda, dtype="bf16"), big, BPT, GIB, "", count_weights=False, available=16 * GIB)


def test_max_model_len_is_bounded_by_its_tables():
    long = replace(CFG, max_model_len=10**9)
    with pytest.raises(ConfigError, match=r"^--max-model-len 1000000000 needs .* of rotary and block tables"):
        check_fits_memory(long, TINY, BPT, GIB, "", available=64 * GIB)


def test_page_ids_must_fit_int32():
    with pytest.raises(ConfigError, match=r"pages; page ids are int32"):
        check_fits_memory(replace(CFG, page_size=1, backends=("paged",)), TINY, 1, 2**31, "", available=2**62)
    with pytest.raises(ConfigError, match=r"token slots; contiguous slots are int32"):
        check_fits_memory(replace(CFG, backends=("contiguous-max",)), TINY, 1, 2**31, "", available=2**62)
