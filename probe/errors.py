"""The one exception type that means "the user gave bad input", not "probe has a bug"."""

from __future__ import annotations


class ProbeError(Exception):
    """Bad input: a config, dataset or path that probe refuses.

    The message is one line that names what is wrong and what is allowed; the CLI prints
    it without a traceback and exits non-zero.
    """


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM here; Ctrl-C raises a plain KeyboardInterrupt)."""

    def __init__(self, signum: int, name: str):
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.name = name
