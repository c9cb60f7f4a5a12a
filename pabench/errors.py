"""Typed errors. The CLI turns any `PabenchError` into one line on stderr and exit code 1."""


class PabenchError(Exception):
    """Base of every error pabench raises on purpose (bad input, impossible sizes, misuse)."""


class ConfigError(PabenchError, ValueError):
    """A value the user (or caller) gave is invalid: bad size, unknown name, malformed file."""


class OutOfPagesError(PabenchError):
    """The page pool cannot serve a request; nothing was changed."""

    def __init__(self, num_needed: int, num_free: int, what: str = "allocate") -> None:
        self.num_needed = num_needed
        self.num_free = num_free
        super().__init__(f"out of pages: {what} needs {num_needed} page(s), only {num_free} free")


class SequenceStateError(PabenchError, ValueError):
    """A sequence was used in a state that does not allow it (freed twice, appended after finishing)."""


class OutputError(PabenchError):
    """A result could not be written where the user asked (the message names the user's path)."""
