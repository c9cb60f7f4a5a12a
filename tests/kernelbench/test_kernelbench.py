"""The kernel benchmark library end to end on the CPU (tiny sizes), and its config validation."""

import math

import pytest
from rich.console import Console

from pabench.errors import ConfigError
from pabench.report.kernels import kernel_summary, kernel_table
from pabench.kernelbench.run import NAMED_CASES, KernelBenchConfig, case_lengths, run_kernel_bench, shrink_for_cpu


def test_case_b_lengths_are_the_specified_lognormal():
    lens = case_lengths(NAMED_CASES["b"])
    assert len(lens) == 256 and min(lens) >= 16 and max(lens) <= 8192
    assert 950 < sum(lens) / len(lens) < 1070  # mean ~1008
    assert case_lengths(NAMED_CASES["a"]) == [4096] * 64


def test_cpu_shrink_says_so():
    lens, note = shrink_for_cpu(NAMED_CASES["c"], case_lengths(NAMED_CASES["c"]))
    assert max(lens) <= 256 and "shrunk" in note
    assert shrink_for_cpu(NAMED_CASES["d"], [3, 4]) == ([3, 4], "")


@pytest.mark.parametrize("kwargs", [{"case": "e"}, {"lengths": "zipf"}, {"page_sizes": (12,)}, {"dtype": "int8"},
                                    {"impls": ("cuda-magic",)}, {"num_q_heads": 6, "num_kv_heads": 4},
                                    {"rep_ms": 0}, {"device": "tpu"}, {"batch": 0}, {"kv_dtype": "int4"},
                                    {"kv_dtype": "fp8", "impls": ("torch-sdpa",)}])
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        KernelBenchConfig(**kwargs)


def test_page_size_defaults():
    assert KernelBenchConfig(case="custom").resolved_page_sizes() == (8, 16, 32, 64, 128)
    assert KernelBenchConfig(case="a").resolved_page_sizes() == (16,)
    assert KernelBenchConfig(case="a", page_sizes=(1, 256)).resolved_page_sizes() == (1, 256)


def test_tiny_custom_run_end_to_end():
    cfg = KernelBenchConfig(case="custom", batch=3, context=24, lengths="lognormal", page_sizes=(4, 16),
                            num_q_heads=4, num_kv_heads=2, head_dim=32, dtype="fp32", warmup_ms=0.5, rep_ms=2,
                            device="cpu",
                            impls=("triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa", "torch-reference"))
    messages = []
    rows = run_kernel_bench(cfg, progress=messages.append)
    assert messages and all(r["case"] == "custom" for r in rows)
    impls = {r["impl"].split("[")[0] for r in rows}
    assert impls == {"triton-paged", "triton-contiguous", "torch-sdpa", "gather+sdpa", "torch-reference"}
    assert len(rows) == 1 + 2 * 4  # one SDPA row, then four page-dependent rows per page size
    for row in rows:
        assert row["check"] == "ok", row
        assert row["median_us"] > 0 and row["p10_us"] <= row["median_us"] <= row["p90_us"]
        assert row["kv_bytes"] == 2 * sum_lens(cfg) * 2 * 32 * 4
        assert math.isclose(row["gbps"], row["kv_bytes"] / row["median_us"] / 1e3)
        assert row["copy_bw_gbps"] > 0 and row["device_name"] == "cpu" and row["torch"]
    paged = [r for r in rows if r["impl"] == "triton-paged"]
    assert len(paged) == 2 and all(r["paged_over_contiguous"] > 0 for r in paged)
    console = Console(width=200, record=True)
    console.print(kernel_table(rows))
    assert "triton-paged" in console.export_text()
    summary = kernel_summary(rows)
    assert any("paged/contiguous" in line for line in summary)


def test_fp8_kv_run_counts_one_byte_per_element_and_reports_the_quantisation_error():
    cfg = KernelBenchConfig(case="custom", batch=3, context=40, lengths="lognormal", page_sizes=(16,),
                            num_q_heads=4, num_kv_heads=2, head_dim=64, dtype="bf16", warmup_ms=0.5, rep_ms=2,
                            device="cpu", kv_dtype="fp8")
    rows = run_kernel_bench(cfg)  # default impls on a CPU with fp8: the reference only
    assert [r["impl"] for r in rows] == ["torch-reference"]
    cfg = KernelBenchConfig(**{**cfg.__dict__, "impls": ("triton-paged", "triton-contiguous", "torch-reference")})
    rows = run_kernel_bench(cfg)
    assert [r["impl"] for r in rows] == ["triton-paged", "triton-contiguous", "torch-reference"]
    for row in rows:
        assert row["check"] == "ok" and row["kv_dtype"] == "fp8", row
        assert row["kv_bytes"] == 2 * sum_lens(cfg) * 2 * 64 * 1
        assert 1e-3 < row["kv_quant_err"] < 0.08  # really 8-bit, and still close to the bf16 cache's output
    console = Console(width=200, record=True)
    console.print(kernel_table(rows))
    assert "fp8 err" in console.export_text()


def test_cuda_graph_timing_on_a_cpu_says_it_times_by_wall_clock():
    cfg = KernelBenchConfig(case="custom", batch=2, context=8, page_sizes=(4,), num_q_heads=2, num_kv_heads=1,
                            head_dim=16, dtype="fp32", warmup_ms=0.2, rep_ms=1, device="cpu", cuda_graphs=True,
                            impls=("torch-reference",))
    messages = []
    rows = run_kernel_bench(cfg, progress=messages.append)
    assert rows and all(r["timing"] == "wall-clock" and r["check"] == "ok" for r in rows)
    assert any("--cuda-graphs needs CUDA" in m for m in messages)
    console = Console(width=200, record=True)
    console.print(kernel_table(rows))
    assert "timing: wall-clock" in console.export_text()


def sum_lens(cfg: KernelBenchConfig) -> int:
    return sum(case_lengths(next(iter(cfg.cases().values())), cfg.seed))


def test_a_wrong_kernel_is_a_visible_failure(monkeypatch):
    """A timed impl whose output is wrong is flagged FAIL in its row and in the summary, not silently timed."""
    import pabench.kernels as kernels

    monkeypatch.setattr(kernels, "paged_decode_reference", lambda q, *args, **kw: q * 0 + 1)
    cfg = KernelBenchConfig(case="custom", batch=2, context=20, page_sizes=(8,), num_q_heads=4, num_kv_heads=2,
                            head_dim=32, dtype="fp32", warmup_ms=0.5, rep_ms=1, device="cpu",
                            impls=("torch-reference",))
    rows = run_kernel_bench(cfg)
    assert [r["check"] for r in rows] == ["FAIL"]
    assert any("FAIL" in line for line in kernel_summary(rows))


def test_cpu_shrink_keeps_what_was_given():
    lens = case_lengths(NAMED_CASES["a"])
    assert shrink_for_cpu(NAMED_CASES["a"], lens, keep_batch=True, keep_context=True) == (lens, "")
    small, note = shrink_for_cpu(NAMED_CASES["a"], lens, keep_batch=True)
    assert small == [256] * 64 and "default max context 4096->256" in note and "batch" not in note.split("(")[0]
    small, note = shrink_for_cpu(NAMED_CASES["a"], lens, keep_context=True)
    assert small == [4096] * 8 and "default batch 64->8" in note and "(give --batch " in note


def test_custom_defaults_are_none_until_filled():
    cfg = KernelBenchConfig(case="custom")
    assert (cfg.batch, cfg.context) == (None, None) and cfg.explicit() == (False, False)
    assert (cfg.custom_case().batch, cfg.custom_case().context) == (64, 4096)
    assert KernelBenchConfig(case="custom", batch=3).explicit() == (True, False)
    with pytest.raises(ConfigError, match="shape the custom case"):
        KernelBenchConfig(case="b", context=10)


def test_a_huge_explicit_case_is_refused_before_its_lengths_are_drawn(monkeypatch):
    """--batch 10**8 used to build a 10**8-element list (70 s) before the memory check refused it."""
    from typer.testing import CliRunner

    import pabench.kernelbench.run as kernel_run
    from pabench.cli import app

    def never(*args, **kwargs):
        raise AssertionError("lengths drawn before the shape was checked")

    monkeypatch.setattr(kernel_run, "case_lengths", never)
    res = CliRunner().invoke(app, ["kernels", "--device", "cpu", "--batch", "100000000", "--context", "100000000"])
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().startswith("pabench: error: batch 100000000 x context 100000000 needs")


def test_models_run_every_length_set_with_the_models_head_shape():
    """`kernels --models`: each model's heads, three length sets, rows tagged (CPU smoke shapes)."""
    from pabench.kernelbench.models import MODEL_SHAPES, run_models_bench
    from pabench.kernelbench.run import KernelBenchConfig

    cfg = KernelBenchConfig(case="custom", page_sizes=(16,), device="cpu", impls=("torch-reference",),
                            warmup_ms=0.0, rep_ms=1.0)
    rows = run_models_bench(["qwen2.5-7b"], cfg, on_cpu=True)
    assert [r["lengths"] for r in rows] == ["uniform", "lognormal", "skewed"]
    shape = MODEL_SHAPES["qwen2.5-7b"]
    assert all((r["num_q_heads"], r["num_kv_heads"], r["head_dim"]) == (28, 4, 128) == (
        shape.num_q_heads, shape.num_kv_heads, shape.head_dim) for r in rows)
    assert all(r["check"] == "ok" and r["case"] == f"qwen2.5-7b/{r['lengths']}" for r in rows)


def test_skewed_lengths_put_half_the_kv_in_one_sequence():
    from pabench.kernelbench.run import CaseSpec, case_lengths

    lens = case_lengths(CaseSpec(64, 2048, "skewed"))
    assert len(lens) == 64 and lens[0] == 65536 and set(lens[1:]) == {1024}


@pytest.mark.parametrize("args,needle", [(["--models", "gpt-5"], "unknown gpt-5"),
                                         (["--models", "all", "--context", "9"], "drop --batch and --context"),
                                         (["--impls", "cuda-magic"], "unknown cuda-magic")])
def test_models_and_impls_bad_input_is_one_line(args, needle):
    from typer.testing import CliRunner

    from pabench.cli import app

    res = CliRunner().invoke(app, ["kernels", "--device", "cpu", *args])
    assert res.exit_code == 1 and needle in res.output and "Traceback" not in res.output
