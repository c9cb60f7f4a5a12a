"""Shared checks for the kernel tests: relative error against a reference, NaN never passes."""

import torch

REL_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives NaN (which fails any `<` check)."""
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert out.shape == ref.shape
    assert not torch.isnan(out).any(), "NaN in output (unwritten element?)"
    err = rel_err(out, ref)
    assert err < REL_TOL[dtype], f"relative error {err:.2e} >= {REL_TOL[dtype]:.0e}"
