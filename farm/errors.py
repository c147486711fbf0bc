"""The farm's one error hierarchy.

Every error a person can see says what is wrong, where, and what to do. Library and
system errors (redis, OSError, subprocess) are translated into these at the module that
talks to the outside system; the CLI maps them to exit codes at the edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FarmError(Exception):
    """Base of every error the farm raises on purpose."""

    #: exit code of the `farm` command when this error ends it (see README, "Exit codes").
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class BadInput(FarmError):
    """The user's input (a file, a flag, a setting) is wrong. Never retried."""

    exit_code = 2

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None,
                 hint: str | None = None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{reason}", hint=hint)
        self.path = path
        self.line = line
        self.reason = reason


class ConfigError(BadInput):
    """A setting (CLI flag, FARM_* variable or config file) has a bad value."""


class NotFound(FarmError):
    """A run, sweep or other named thing does not exist."""

    exit_code = 2


class FarmUnavailable(FarmError):
    """Something the farm needs to work is not there: Redis, darknet, a free port."""

    exit_code = 3


class RedisUnreachable(FarmUnavailable):
    pass


class RedisRefused(RedisUnreachable):
    """Something answered at the Redis URL, but refused the login or is not Redis:
    waiting will not help."""


class DarknetNotFound(FarmUnavailable):
    pass


class PortInUse(FarmUnavailable):
    pass


class HostUnreachable(FarmUnavailable):
    """`host` names the machine that did not answer (a host.away notification says it)."""

    def __init__(self, message: str, *, hint: str | None = None, host: str | None = None):
        super().__init__(message, hint=hint)
        self.host = host


class DeliveryFailed(FarmUnavailable):
    """A notification's receiver (FARM_NOTIFY_URL) did not take it; it is tried again."""


class NoSpace(FarmUnavailable):
    """The filesystem of the data dir has too little free space for darknet's next
    weights files: the run waits (its task is retried) until there is."""


class RunFailed(FarmError):
    """A run ended failed; the message says why. The training task raises it, so Flower
    and the result backend say FAILURE with the reason, not SUCCESS."""


class LeaseLost(FarmError):
    """Another process holds the run: this one must stop its darknet at once."""


class StateConflict(FarmError):
    """A change its state forbids: a finished run set queued or running again, or ended
    twice (farm.runs.life). A bug in the caller, never the user's input."""


class Severity(str, Enum):
    """How bad a finding is: an error refuses the input, a warning is said and let pass."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One problem found in a user's file: where, why, and how to fix it."""

    path: str
    line: int | None
    reason: str
    fix: str
    severity: Severity = Severity.ERROR

    def __post_init__(self):
        # read back from JSON (a task's result) it is a string again
        object.__setattr__(self, "severity", Severity(self.severity))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity}: {where}: {self.reason} (fix: {self.fix})"


class FindingsError(BadInput):
    """Raised when a check found errors; carries every finding, not just the first."""

    def __init__(self, findings: list[Finding], what: str = "input"):
        errors = [f for f in findings if f.severity is Severity.ERROR]
        first = errors[0] if errors else findings[0]
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(f"{first.reason}{more}", path=first.path, line=first.line,
                         hint=first.fix)
        self.findings = findings
        self.what = what
