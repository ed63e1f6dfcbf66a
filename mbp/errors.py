"""One error hierarchy: each class carries the exit code the CLI maps it to."""


class MbpError(Exception):
    """Base of every error mbp reports; the message says what to do."""

    exit_code = 1


class UsageError(MbpError):
    """Bad options or bad input: a schema mismatch, a filter that does not parse."""

    exit_code = 2


class RuntimeFailure(MbpError):
    """I/O failed, a model errored, a file is corrupt."""

    exit_code = 1


class LockedError(MbpError):
    """The dataset is locked by another run; retrying later will work."""

    exit_code = 75


class Interrupted(MbpError):
    """SIGINT or SIGTERM arrived; whatever was in progress was rolled back."""

    exit_code = 130

    def __init__(self, message: str = "interrupted", exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
