"""The project's error types: user-facing errors become one line and exit code 2 in the CLI."""

from __future__ import annotations


class PptuneError(Exception):
    """A problem with what the user asked for or gave us (bad input, infeasible request).

    The CLI prints ``str(error)`` on one line and exits with code 2. Internal bugs stay
    ordinary exceptions (asserts) so they keep their tracebacks.
    """


class SchemaError(PptuneError):
    """A profile, cluster or plan file that is malformed, incomplete or of an unknown version."""


class ConfigError(PptuneError):
    """A parallel configuration that cannot run (batch rule, divisibility, ZeRO with pp...)."""


class InfeasibleError(PptuneError):
    """No configuration fits the request (memory, GPU count)."""


class RunError(PptuneError):
    """A real run (DeepSpeed training, link probe) crashed, hung or ran out of memory."""
