"""The one exception a user should ever see from lf-wrap.

Anything the user can fix (a bad file, a missing key, a clashing name) is raised as
`UserError` with a message that names the file, the row or the key. The click layer prints
it as one line and exits non-zero; everything else is a bug and keeps its traceback."""

import click


class UserError(click.ClickException):
    """Bad input: printed as `Error: <message>`, exit code 2, nothing on disk changed."""

    exit_code = 2
