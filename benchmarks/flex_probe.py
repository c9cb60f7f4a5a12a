"""Find which op of the FlexAttention paged path trips a device-side assert (run with CUDA_LAUNCH_BLOCKING=1)."""

import traceback

import torch

from pabench.kernelbench import make_decode_data, paginate
from pabench.kernels import contiguous_decode_reference, flex_paged_decode

for lens in ([100, 37, 64, 16], [4096] * 4):
    data = make_decode_data(lens, 32, 8, 128, torch.bfloat16, torch.device("cuda"), seed=0)
    k_cache, v_cache, table = paginate(data, 16)
    try:
        run = flex_paged_decode(data.q, k_cache, v_cache, table, data.seq_lens)
        print("setup ok", flush=True)
        out = run().float()
        torch.cuda.synchronize()
        ref = contiguous_decode_reference(data.q, data.k_slab, data.v_slab, data.seq_starts, data.seq_lens).float()
        print("flex rel err", float((out - ref).norm() / ref.norm()), flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        break
