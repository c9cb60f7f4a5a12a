"""`pabench kernels --models`: the decode kernel on the head configurations of the models people serve, each with
uniform, lognormal and skewed lengths, so a shape the kernel was not tuned on shows up as a row, not a surprise.

Each shape is (query heads, KV heads, head_dim) from the model's Hugging Face `config.json`
(num_attention_heads, num_key_value_heads, hidden_size / num_attention_heads, or head_dim where given).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from pabench.errors import ConfigError
from pabench.kernelbench.run import KernelBenchConfig, run_kernel_bench


@dataclass(frozen=True)
class HeadShape:
    """Attention heads of one model: `num_q_heads` query heads sharing `num_kv_heads` KV heads of `head_dim`."""

    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    source: str

    def __post_init__(self) -> None:
        if min(self.num_q_heads, self.num_kv_heads, self.head_dim) < 1 or self.num_q_heads % self.num_kv_heads:
            raise ConfigError(f"{self.source}: query heads must be a positive multiple of KV heads")


MODEL_SHAPES = {
    "llama-3-8b": HeadShape(32, 8, 128, "meta-llama/Meta-Llama-3-8B"),
    "llama-3-70b": HeadShape(64, 8, 128, "meta-llama/Meta-Llama-3-70B"),
    "llama-3.2-1b": HeadShape(32, 8, 64, "meta-llama/Llama-3.2-1B (head_dim 64)"),
    "llama-3.2-3b": HeadShape(24, 8, 128, "meta-llama/Llama-3.2-3B (group 3)"),
    "qwen2.5-1.5b": HeadShape(12, 2, 128, "Qwen/Qwen2.5-1.5B (2 KV heads, group 6)"),
    "qwen2.5-7b": HeadShape(28, 4, 128, "Qwen/Qwen2.5-7B (group 7)"),
    "qwen2.5-72b": HeadShape(64, 8, 128, "Qwen/Qwen2.5-72B"),
    "mistral-7b": HeadShape(32, 8, 128, "mistralai/Mistral-7B-v0.1"),
    "llama-2-7b": HeadShape(32, 32, 128, "meta-llama/Llama-2-7b-hf (MHA)"),
}

# (batch, context, lengths) per length set; skewed puts half the KV in one sequence
LENGTH_SETS = {"uniform": (64, 4096, "fixed"), "lognormal": (256, 1024, "lognormal"), "skewed": (64, 2048, "skewed")}
CPU_LENGTH_SETS = {"uniform": (4, 64, "fixed"), "lognormal": (8, 32, "lognormal"), "skewed": (4, 32, "skewed")}


def parse_models(text: str) -> list[str]:
    """'all' or a comma list of MODEL_SHAPES names."""
    names = list(MODEL_SHAPES) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_SHAPES]
    if unknown or not names:
        raise ConfigError(f"--models: unknown {', '.join(unknown) or '(none given)'}; choose all or from "
                          f"{', '.join(MODEL_SHAPES)}")
    return names


def run_models_bench(models: list[str], base: KernelBenchConfig, on_cpu: bool,
                     progress: Callable[[str], None] | None = None) -> list[dict]:
    """Every (model, length set) as a custom case of `base` (dtype, device, page sizes, impls, timing); rows gain
    `model`, `lengths` and the head shape. On a CPU the length sets shrink to a smoke test."""
    sets = CPU_LENGTH_SETS if on_cpu else LENGTH_SETS
    rows: list[dict] = []
    for name in models:
        shape = MODEL_SHAPES[name]
        for label, (batch, context, lengths) in sets.items():
            cfg = replace(base, case="custom", batch=batch, context=context, lengths=lengths,
                          num_q_heads=shape.num_q_heads, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim)
            if progress:
                progress(f"model {name} ({shape.num_q_heads}/{shape.num_kv_heads} heads, head_dim "
                         f"{shape.head_dim}), {label} lengths")
            for row in run_kernel_bench(cfg, progress):
                rows.append({**row, "case": f"{name}/{label}", "model": name, "lengths": label,
                             "num_q_heads": shape.num_q_heads, "num_kv_heads": shape.num_kv_heads,
                             "head_dim": shape.head_dim})
    return rows
