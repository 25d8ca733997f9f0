"""The exceptions a user sees from lf-wrap, as plain exceptions with an exit code.

Anything the user can fix (a bad file, a missing key, a clashing name) is raised as
`UserError` with a message that names the file, the line or the key. The core never prints
and never imports click: `lf_wrap.commands` turns an `LfWrapError` into one `Error: <message>`
line and its exit code; anything else is a bug and keeps its traceback."""


class LfWrapError(Exception):
    """An error with a message meant for the user and the exit code lf-wrap ends with."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UserError(LfWrapError):
    """Bad input: exit code 2, nothing on disk changed."""

    exit_code = 2


class Interrupted(LfWrapError):
    """Ctrl-C, SIGTERM or SIGHUP stopped a stage (and its child): exit code 130, as a shell gives."""

    exit_code = 130
