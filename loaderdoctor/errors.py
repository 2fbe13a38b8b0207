"""The one project exception. Only cli.py turns it into an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_HANG = 3
EXIT_CRASH = 4
EXIT_INTERRUPTED = 130


class LoaderDoctorError(Exception):
    """A failure the user can act on: one paragraph of text and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, report_path: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.report_path = report_path
