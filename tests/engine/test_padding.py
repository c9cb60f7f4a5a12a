"""Prefill shape buckets (engine/padding.py): padding a step's tokens and logits rows changes no real row."""

import pytest
import torch

from pabench.bench.runner import RunConfig, build_backend, prepare, scheduler_config
from pabench.engine.engine import Engine
from pabench.engine.padding import ROW_BUCKET, TOKEN_BUCKET, bucket, warm_prefill_gemms


def test_bucket_rounds_up():
    assert [bucket(n, 64) for n in (1, 63, 64, 65, 128)] == [64, 64, 64, 128, 128]


@pytest.mark.parametrize("backend", ["paged", "contiguous-oracle"])
def test_padded_prefill_serves_the_same_tokens(backend):
    """The CUDA path's padding, forced on the CPU (fp32): same tokens and same schedule as without it."""
    p = prepare(RunConfig(workload="default", num_requests=12, warmup=False))
    outputs = []
    for pad in (False, True):
        engine = Engine(p.model, build_backend(p, backend), scheduler_config(p))
        engine.pad_prefill = pad
        record = engine.run(p.requests, realtime=False)
        outputs.append((record.output_token_ids, [(s.kind, s.num_seqs) for s in record.steps]))
    assert outputs[0] == outputs[1]


def test_warm_prefill_gemms_covers_every_bucket():
    p = prepare(RunConfig(workload="default", num_requests=2, warmup=False))
    count = warm_prefill_gemms(p.model, 300, 40)
    assert count == 4 * (bucket(300, TOKEN_BUCKET) // TOKEN_BUCKET) + bucket(40, ROW_BUCKET) // ROW_BUCKET
    assert torch.isfinite(p.model.lm_head).all()


def test_variant_batches_one_per_compiled_variant():
    """BLOCK_B 64 / 128 / 256, the tiling switch above 128, Triton's batch == 1 and batch % 16 == 0 cases."""
    from pabench.kernels import variant_batches

    assert variant_batches(256) == [1, 2, 16, 65, 80, 129, 144]
    assert variant_batches(20) == [1, 2, 16]


@pytest.mark.parametrize("backend", ["paged", "contiguous-max"])
def test_warm_eager_decode_runs_on_either_layout(backend):
    from pabench.engine.padding import warm_eager_decode
    from pabench.kernels import variant_batches

    p = prepare(RunConfig(workload="default", num_requests=2, warmup=False))
    count = warm_eager_decode(p.model, build_backend(p, backend), 20)
    assert count == 5 * 20 + 2 * len(variant_batches(20))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["paged", "contiguous-max"])
def test_warm_eager_decode_leaves_no_triton_compile_to_the_run(backend):
    """After the warm-up, eager decode at every batch size 1..max_num_seqs compiles nothing more: the ~0.7 s
    compiles that landed in the first backend's timed steps of a beam run are gone."""
    from pabench.engine.padding import warm_eager_decode
    from pabench.kernels.decode import num_compiled

    n = 160
    p = prepare(RunConfig(workload="default", model="llama-3-8b", layers=1, device="cuda", dtype="bf16",
                          num_requests=2, warmup=False, max_num_seqs=n, kv_budget_bytes=1 << 30))
    be = build_backend(p, backend)
    warm_eager_decode(p.model, be, n)
    before = num_compiled()
    c = p.model.config
    q = torch.randn(n, c.num_q_heads, c.head_dim, device="cuda", dtype=torch.bfloat16)  # [n, Hq, D]
    for b in range(1, n + 1):
        be.stage_decode([], b)
        be.decode_meta(b)
        out = be.decode_attention(0, q[:b])  # [b, Hq, D]
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    assert num_compiled() == before
