"""pabench: measure what a paged KV cache buys over a contiguous one.

Importing the package is cheap on purpose: torch is imported lazily by the modules that need it.
"""

__version__ = "0.1.0"
