"""The base of every error orbithil raises on purpose.

An ``OrbithilError`` is a user's error (bad input, a missing file, an unreachable port): the
CLI prints its message on one line and exits 2, and shows the traceback only with ``-v``.
Anything else that escapes is a bug in orbithil and keeps its traceback.
"""

from __future__ import annotations


class OrbithilError(Exception):
    """Something the user can fix; the message says what was wrong and how to fix it."""


class ConfigError(OrbithilError, ValueError):
    """A setting, option or configuration value that is not valid."""
