"""pabench.core must stay torch-free (it is the CLI's and the textbook's import path)."""

import subprocess
import sys


def test_core_imports_no_torch():
    code = ("import pabench.core, sys; "
            "assert 'torch' not in sys.modules, 'pabench.core imported torch'; "
            "assert 'triton' not in sys.modules, 'pabench.core imported triton'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_public_names():
    import pabench.core as core

    for name in ["Page", "PageTable", "Sequence", "SequenceStatus", "BlockManager", "PabenchError",
                 "ConfigError", "OutOfPagesError", "SequenceStateError"]:
        assert hasattr(core, name), name
