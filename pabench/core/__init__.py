"""Paged-KV-cache vocabulary: pages, page tables, sequences, and the block manager that shares pages.

Pure Python, no torch: read these files to learn how a paged KV cache (vLLM's PagedAttention) manages memory.
"""

from pabench.core.block_manager import BlockManager
from pabench.errors import ConfigError, OutOfPagesError, PabenchError, SequenceStateError
from pabench.core.page import FrozenPage, Page
from pabench.core.page_table import PageTable
from pabench.core.sequence import Sequence, SequenceStatus

__all__ = [
    "BlockManager",
    "ConfigError",
    "FrozenPage",
    "OutOfPagesError",
    "PabenchError",
    "Page",
    "PageTable",
    "Sequence",
    "SequenceStateError",
    "SequenceStatus",
]
