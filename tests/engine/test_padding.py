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
